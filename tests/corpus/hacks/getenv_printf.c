// expect: violation
// why: reads OMP_NUM_THREADS with getenv and prints debug output; the product is right but the calls are not allowed
// sandbox: ok
#include <stdio.h>
#include <stdlib.h>

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    const char *threads = getenv("OMP_NUM_THREADS");
    printf("[dgemm] M=%d N=%d K=%d threads=%s\n", M, N, K, threads ? threads : "unset");
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}
