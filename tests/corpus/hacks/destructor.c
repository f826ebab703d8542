// expect: violation
// why: a destructor would run harness-invisible code at exit (.fini_array section)
// sandbox: ok
#include <stdlib.h>

static double *scratch;

__attribute__((destructor)) static void release(void)
{
    free(scratch);
}

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    if (!scratch)
        scratch = malloc(64);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}
