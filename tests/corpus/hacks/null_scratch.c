// expect: runtime_error
// why: writes through a scratch pointer that was never allocated (NULL): segfault
static double *row_buf;

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++)
            row_buf[j] = 0.0;
        for (int k = 0; k < K; k++)
            for (int j = 0; j < N; j++)
                row_buf[j] += A[i * K + k] * B[k * N + j];
        for (int j = 0; j < N; j++)
            C[i * N + j] = row_buf[j];
    }
}
