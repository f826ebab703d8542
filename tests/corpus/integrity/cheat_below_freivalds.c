// expect: wrong_result
// why: exact where a full comparison is predictable (small check shapes, the first benchmark call), then off by 1e-10 in one element of every product: below Freivalds' tolerance at 256 (about 2e-9 there), far above the elementwise bound of a full comparison (about 1e-11); only the calls compared in full, chosen at random after each call, can see it
static long calls;

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++)
            C[i * N + j] = 0.0;
        for (int k = 0; k < K; k++) {
            double a = A[i * K + k];
            for (int j = 0; j < N; j++)
                C[i * N + j] += a * B[k * N + j];
        }
    }
    if (M >= 128 && ++calls > 1)
        C[0] += 1e-10;
}
