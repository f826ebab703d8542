// expect: ok
// why: picks a code path at run time with __builtin_cpu_supports (libgcc's __cpu_model, filled by its own __cpu_indicator_init constructor, which makes no system call)
// techniques:
#include <string.h>

static void ikj(int M, int N, int K, const double *A, const double *B, double *C, int wide)
{
    for (int i = 0; i < M; i++) {
        double *c = C + (size_t)i * N;
        memset(c, 0, (size_t)N * sizeof(double));
        for (int k = 0; k < K; k++) {
            const double a = A[(size_t)i * K + k];
            const double *b = B + (size_t)k * N;
            if (wide)
                for (int j = 0; j < N; j++)
                    c[j] += a * b[j];
            else
                for (int j = N - 1; j >= 0; j--)
                    c[j] += a * b[j];
        }
    }
}

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    ikj(M, N, K, A, B, C, __builtin_cpu_supports("avx2"));
}
