// expect: violation
// why: defines a global clock_gettime that would interpose the harness timer (extra defined symbol)
// sandbox: ok
#include <time.h>

int clock_gettime(clockid_t id, struct timespec *ts)
{
    static long fake_ns;
    (void)id;
    fake_ns += 1000;
    ts->tv_sec = fake_ns / 1000000000L;
    ts->tv_nsec = fake_ns % 1000000000L;
    return 0;
}

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}
