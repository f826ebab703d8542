// expect: violation
// why: uses OpenMP threads in a stage that forbids openmp
// forbid: openmp
// techniques: openmp
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
#pragma omp parallel for
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}
