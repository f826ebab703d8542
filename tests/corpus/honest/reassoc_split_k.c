// expect: ok
// why: k range split in two halves summed separately then added: reassociated but within the error bound
// techniques:
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    const int half = K / 2;
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double lo = 0.0, hi = 0.0;
            for (int k = 0; k < half; k++)
                lo += A[i * K + k] * B[k * N + j];
            for (int k = half; k < K; k++)
                hi += A[i * K + k] * B[k * N + j];
            C[i * N + j] = lo + hi;
        }
    }
}
