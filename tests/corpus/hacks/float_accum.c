// expect: wrong_result
// why: accumulates in single precision for "2x SIMD width"; error ~1e-7 relative, far above the FP64 bound
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = 0.0f;
            for (int k = 0; k < K; k++)
                s += (float)A[i * K + k] * (float)B[k * N + j];
            C[i * N + j] = s;
        }
}
