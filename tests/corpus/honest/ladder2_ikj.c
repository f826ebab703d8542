// expect: ok
// why: loop interchange i-k-j: unit-stride inner loop over B and C that the compiler vectorises
// techniques:
// ladder: 2
#include <string.h>

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        double *c = C + (size_t)i * N;
        memset(c, 0, (size_t)N * sizeof(double));
        for (int k = 0; k < K; k++) {
            const double a = A[(size_t)i * K + k];
            const double *b = B + (size_t)k * N;
            for (int j = 0; j < N; j++)
                c[j] += a * b[j];
        }
    }
}
