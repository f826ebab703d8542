// expect: ok
// why: textbook i-j-k triple loop, dot product per element; strided B access
// techniques:
// ladder: 1
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double sum = 0.0;
            for (int k = 0; k < K; k++)
                sum += A[i * K + k] * B[k * N + j];
            C[i * N + j] = sum;
        }
    }
}
