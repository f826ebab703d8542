// expect: violation
// why: threads from libgomp called by hand (GOMP_parallel with an outlined function), with no #pragma omp anywhere
// forbid: openmp
// cores: 2
struct job {
    int M, N, K;
    const double *A, *B;
    double *C;
};

extern void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags);
extern int omp_get_thread_num(void);
extern int omp_get_num_threads(void);

static void rows(void *arg)
{
    const struct job *w = arg;
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    for (int i = t; i < w->M; i += nt)
        for (int j = 0; j < w->N; j++) {
            double s = 0.0;
            for (int k = 0; k < w->K; k++)
                s += w->A[i * w->K + k] * w->B[k * w->N + j];
            w->C[i * w->N + j] = s;
        }
}

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    struct job w = {M, N, K, A, B, C};
    GOMP_parallel(rows, &w, 0, 0);
}
