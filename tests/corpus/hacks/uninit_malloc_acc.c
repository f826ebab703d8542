// expect: wrong_result
// why: accumulates into malloc'd (not calloc'd) memory; fresh pages are zero on the first call, reused ones hold the last result
#include <stdlib.h>
#include <string.h>

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    double *acc = malloc(sizeof(double) * (size_t)M * N);
    if (!acc)
        return;
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) {
            const double a = A[(size_t)i * K + k];
            for (int j = 0; j < N; j++)
                acc[(size_t)i * N + j] += a * B[(size_t)k * N + j];
        }
    memcpy(C, acc, sizeof(double) * (size_t)M * N);
    free(acc);
}
