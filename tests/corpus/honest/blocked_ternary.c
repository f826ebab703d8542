// expect: ok
// why: i-j-k tiled with runtime block size, bounds written as ternaries and && conditions
// techniques: cache_blocking
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    const int bs = 48;
    for (int i = 0; i < M * N; i++)
        C[i] = 0.0;
    for (int i0 = 0; i0 < M; i0 += bs) {
        for (int k0 = 0; k0 < K; k0 += bs) {
            const int kmax = (k0 + bs < K) ? k0 + bs : K;
            for (int j0 = 0; j0 < N; j0 += bs) {
                for (int i = i0; i < i0 + bs && i < M; i++) {
                    for (int j = j0; j < j0 + bs && j < N; j++) {
                        double s = C[i * N + j];
                        for (int k = k0; k < kmax; k++)
                            s += A[i * K + k] * B[k * N + j];
                        C[i * N + j] = s;
                    }
                }
            }
        }
    }
}
