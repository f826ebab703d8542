// expect: violation
// why: AVX2 intrinsics and vector types assembled by token pasting (CAT(_mm256_, fmadd_pd)), so no _mm256_ name appears in the text
// forbid: simd
#include <immintrin.h>

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define V(op) CAT(CAT(_m, m256_), op)
#define VT CAT(__m, 256d)

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++)
            C[i * N + j] = 0.0;
        for (int k = 0; k < K; k++) {
            const VT a = V(set1_pd)(A[i * K + k]);
            int j = 0;
            for (; j + 4 <= N; j += 4) {
                VT c = V(loadu_pd)(&C[i * N + j]);
                c = V(fmadd_pd)(a, V(loadu_pd)(&B[k * N + j]), c);
                V(storeu_pd)(&C[i * N + j], c);
            }
            for (; j < N; j++)
                C[i * N + j] += A[i * K + k] * B[k * N + j];
        }
    }
}
