// expect: violation
// why: an old-style constructor: a function pointer in .ctors, which the linker folds into .init_array so the loader calls it at load time
// sandbox: ok
#include <stdlib.h>

static double *row;

static void hq_boot(void)
{
    row = malloc(sizeof(double) << 16);
}

__attribute__((used, section(".ctors"))) static void (*const hq_ctor)(void) = hq_boot;

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        double *out = (row && N <= (1 << 16)) ? row : C + (size_t)i * N;
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            out[j] = s;
        }
        if (out == row)
            for (int j = 0; j < N; j++)
                C[(size_t)i * N + j] = row[j];
    }
}
