// expect: runtime_error
// why: asks for a 1 TiB workspace without a NULL check; the allocation fails under the memory limit and the write faults
#include <stdlib.h>

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    double *work = malloc((size_t)1 << 40);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            work[i * N + j] = 0.0;
            for (int k = 0; k < K; k++)
                work[i * N + j] += A[i * K + k] * B[k * N + j];
            C[i * N + j] = work[i * N + j];
        }
    free(work);
}
