// expect: ok
// why: rows of C split across threads with an OpenMP parallel for; i-k-j inside
// techniques: openmp
// cores: 2
#include <string.h>

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++) {
        double *c = C + (size_t)i * N;
        memset(c, 0, (size_t)N * sizeof(double));
        for (int k = 0; k < K; k++) {
            const double a = A[(size_t)i * K + k];
            const double *b = B + (size_t)k * N;
            for (int j = 0; j < N; j++)
                c[j] += a * b[j];
        }
    }
}
