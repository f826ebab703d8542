// expect: violation
// why: calls the libc syscall() wrapper (getpid) to "pin" itself; undefined symbol syscall
// sandbox: ok
#include <unistd.h>
#include <sys/syscall.h>

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    static long pid;
    if (!pid)
        pid = syscall(SYS_getpid);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}
