// expect: ok
// why: B transposed once into a malloc'd buffer so every dot product reads two contiguous rows
// techniques: packing
#include <stdlib.h>

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    double *Bt = (double *)malloc((size_t)N * K * sizeof(double));
    if (!Bt) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double s = 0.0;
                for (int k = 0; k < K; k++)
                    s += A[(size_t)i * K + k] * B[(size_t)k * N + j];
                C[(size_t)i * N + j] = s;
            }
        return;
    }
    for (int k = 0; k < K; k++)
        for (int j = 0; j < N; j++)
            Bt[(size_t)j * K + k] = B[(size_t)k * N + j];
    for (int i = 0; i < M; i++) {
        const double *a = A + (size_t)i * K;
        for (int j = 0; j < N; j++) {
            const double *b = Bt + (size_t)j * K;
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += a[k] * b[k];
            C[(size_t)i * N + j] = s;
        }
    }
    free(Bt);
}
