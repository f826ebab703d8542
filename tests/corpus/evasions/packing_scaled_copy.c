// expect: violation
// why: B transposed into a buffer through an arithmetic wrapper (Bt[..] = 1.0 * B[..]) so the copy is not a plain element read
// forbid: packing
#include <stdlib.h>

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    double *Bt = (double *)malloc((size_t)N * K * sizeof(double));
    if (Bt == NULL)
        return;
    for (int k = 0; k < K; k++)
        for (int j = 0; j < N; j++)
            Bt[(size_t)j * K + k] = 1.0 * B[(size_t)k * N + j];
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[(size_t)i * K + k] * Bt[(size_t)j * K + k];
            C[(size_t)i * N + j] = s;
        }
    free(Bt);
}
