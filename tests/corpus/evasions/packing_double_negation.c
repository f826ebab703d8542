// expect: violation
// why: A rows packed into a static panel as -(-A[..]) + 0.0 through a temporary, with the copy loop written as a while loop
// forbid: packing
#define KC 256

static double panel[KC];

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++)
            C[i * N + j] = 0.0;
        for (int k0 = 0; k0 < K; k0 += KC) {
            const int kn = K - k0 < KC ? K - k0 : KC;
            int t = 0;
            while (t < kn) {
                const double v = -(-A[i * K + k0 + t]);
                panel[t] = v + 0.0;
                t++;
            }
            for (int t2 = 0; t2 < kn; t2++) {
                const double a = panel[t2];
                for (int j = 0; j < N; j++)
                    C[i * N + j] += a * B[(k0 + t2) * N + j];
            }
        }
    }
}
