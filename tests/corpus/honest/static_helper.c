// expect: ok
// why: the row update lives in a static inline helper; dgemm is the only global symbol
// techniques:
static inline void axpy_row(int n, double alpha, const double *x, double *y)
{
    for (int j = 0; j < n; j++)
        y[j] += alpha * x[j];
}

static void zero_row(int n, double *y)
{
    for (int j = 0; j < n; j++)
        y[j] = 0.0;
}

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        zero_row(N, C + (long)i * N);
        for (int k = 0; k < K; k++)
            axpy_row(N, A[(long)i * K + k], B + (long)k * N, C + (long)i * N);
    }
}
