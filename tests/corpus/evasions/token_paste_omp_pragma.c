// expect: violation
// why: an OpenMP parallel for built as _Pragma(STR(CAT(o, mp) parallel for)): neither "omp parallel" nor a #pragma appears in the text
// forbid: openmp
// cores: 2
#define CAT(a, b) a##b
#define STR(x) #x
#define PRAGMA(x) _Pragma(STR(x))
#define THREADS(k) PRAGMA(CAT(o, mp) CAT(para, llel) k)

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    THREADS(for)
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}
