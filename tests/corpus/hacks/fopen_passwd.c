// expect: violation
// sandbox: ok
// why: reads a host file (/etc/passwd) from inside the kernel (undefined fopen/fgets/fclose)
#include <stdio.h>

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    static char leak[4096];
    FILE *f = fopen("/etc/passwd", "r");
    if (f) {
        if (!fgets(leak, sizeof leak, f))
            leak[0] = 0;
        fclose(f);
    }
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}
