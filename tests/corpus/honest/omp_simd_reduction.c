// expect: ok
// why: naive dot products with the k loop marked #pragma omp simd reduction (SIMD, not threads)
// techniques: simd
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double s = 0.0;
#pragma omp simd reduction(+ : s)
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
    }
}
