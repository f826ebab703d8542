// expect: violation
// why: a local function named __cpu_indicator_init, the name of libgcc's CPU probe (the one constructor a linked kernel may have): its own code could pass for the toolchain's in the library check
// sandbox: ok
#include <stdlib.h>

static double *row;

__attribute__((noinline)) static void __cpu_indicator_init(void)
{
    if (!row)
        row = malloc(sizeof(double) << 16);
}

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    __cpu_indicator_init();
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
