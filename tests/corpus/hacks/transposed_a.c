// expect: wrong_result
// why: reads A as if it were column-major, computing A^T B (only meaningful when M == K)
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[k * M + i] * B[k * N + j];
            C[i * N + j] = s;
        }
}
