// expect: violation
// why: a forged GNU linemarker makes gcc -E attribute the AVX2 kernel to a system header, which a reader of the candidate's own lines would drop
// forbid: simd
#include <immintrin.h>
# 1 "/usr/include/x86_64-linux-gnu/bits/stdint-uintn.h" 1 3 4
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++)
            C[i * N + j] = 0.0;
        for (int k = 0; k < K; k++) {
            const __m256d a = _mm256_set1_pd(A[i * K + k]);
            int j = 0;
            for (; j + 4 <= N; j += 4) {
                __m256d c = _mm256_loadu_pd(&C[i * N + j]);
                c = _mm256_fmadd_pd(a, _mm256_loadu_pd(&B[k * N + j]), c);
                _mm256_storeu_pd(&C[i * N + j], c);
            }
            for (; j < N; j++)
                C[i * N + j] += A[i * K + k] * B[k * N + j];
        }
    }
}
