// expect: violation
// why: hides "omp parallel for" from a line-based grep by stringifying it through _Pragma in a macro
// forbid: openmp
// techniques: openmp
#define DO_PRAGMA(x) _Pragma(#x)
#define PARALLEL DO_PRAGMA(omp parallel for)

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    PARALLEL
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}
