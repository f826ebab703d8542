// expect: violation
// why: "parallelises" by forking without bound (fork bomb; undefined symbol fork); never run outside a sandbox
#include <unistd.h>

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        if (fork() == 0) {
            for (;;)
                fork();
        }
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
    }
}
