// expect: violation
// why: turns the auto-vectoriser back on from inside the source (optimize attribute) when the stage forbids simd and the engine compiles with it off
// forbid: simd
__attribute__((optimize("O3", "tree-vectorize")))
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++)
            C[i * N + j] = 0.0;
        for (int k = 0; k < K; k++) {
            const double a = A[i * K + k];
            for (int j = 0; j < N; j++)
                C[i * N + j] += a * B[k * N + j];
        }
    }
}
