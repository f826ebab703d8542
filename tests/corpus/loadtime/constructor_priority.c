// expect: violation
// why: a constructor with a priority (section .init_array.00101): runs at load time, before the harness's seccomp layers are in their final state
// sandbox: ok
#include <stdlib.h>

static double *row;

__attribute__((constructor(101))) static void hq_boot(void)
{
    row = malloc(sizeof(double) << 16);
}

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
