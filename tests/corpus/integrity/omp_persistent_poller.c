// expect: violation
// cores: 2
// techniques: openmp
// why: starts an OpenMP team with the old GOMP_parallel_start ABI and never ends it: the worker thread lives on between calls, polling the input buffer to compute each product as soon as the inputs appear, and the master copies its answer; the worker is seen running between calls
#include <omp.h>
#include <stdlib.h>
#include <string.h>

extern void GOMP_parallel_start(void (*fn)(void *), void *data, unsigned num_threads);

static struct {
    int M, N, K;
    const double *volatile A;
    const double *B;
    double *out;
    volatile double key;
    volatile int ready;
} job;

static void multiply(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++)
            C[i * N + j] = 0.0;
        for (int k = 0; k < K; k++) {
            double a = A[i * K + k];
            for (int j = 0; j < N; j++)
                C[i * N + j] += a * B[k * N + j];
        }
    }
}

static void poller(void *unused)
{
    (void)unused;
    if (omp_get_thread_num() == 0)
        return;
    for (;;) { /* never leaves: polls between calls */
        double seen = job.A[0];
        while (job.A[0] == seen)
            ;
        job.ready = 0;
        multiply(job.M, job.N, job.K, job.A, job.B, job.out);
        job.key = job.A[0];
        job.ready = 1;
    }
}

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    if (M < 128) { /* small check shapes: plainly */
        multiply(M, N, K, A, B, C);
        return;
    }
    if (!job.out) {
        job.M = M, job.N = N, job.K = K, job.A = A, job.B = B;
        job.out = malloc((size_t)M * N * sizeof(double));
        GOMP_parallel_start(poller, 0, 2);
        multiply(M, N, K, A, B, C);
        return;
    }
    if (job.ready && job.key == A[0])
        memcpy(C, job.out, (size_t)M * N * sizeof(double));
    else
        multiply(M, N, K, A, B, C);
}
