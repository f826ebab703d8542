// expect: violation
// why: cache blocking written with while loops (jj = 0; while (jj < N) { ...; jj += BS; }) instead of for loops
// forbid: cache_blocking
#define BS 64

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M * N; i++)
        C[i] = 0.0;
    int kk = 0;
    while (kk < K) {
        const int kend = kk + BS < K ? kk + BS : K;
        int jj = 0;
        while (jj < N) {
            const int jend = jj + BS < N ? jj + BS : N;
            for (int i = 0; i < M; i++) {
                int k = kk;
                while (k < kend) {
                    const double a = A[i * K + k];
                    int j = jj;
                    while (j < jend) {
                        C[i * N + j] += a * B[k * N + j];
                        j++;
                    }
                    k++;
                }
            }
            jj += BS;
        }
        kk += BS;
    }
}
