// expect: ok
// why: i-k-j with the inner loop unrolled by the compiler through #pragma GCC unroll 4
// techniques: loop_unrolling
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++)
            C[i * N + j] = 0.0;
        for (int k = 0; k < K; k++) {
            const double aik = A[i * K + k];
#pragma GCC unroll 4
            for (int j = 0; j < N; j++)
                C[i * N + j] += aik * B[k * N + j];
        }
    }
}
