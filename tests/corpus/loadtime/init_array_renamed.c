// expect: violation
// why: a constructor table under a name of its own (.hq_boot, type INIT_ARRAY via @init_array): the linker still places it in .init_array and the loader calls it; a name-based check misses it
// sandbox: ok
#include <stdlib.h>

static double *row;

__attribute__((used)) static void hq_boot(void)
{
    row = malloc(sizeof(double) << 16);
}

__asm__(".section .hq_boot,\"aw\",@init_array\n\t.p2align 3\n\t.quad hq_boot\n\t.previous");

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
