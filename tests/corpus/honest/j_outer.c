// expect: ok
// why: column-major style traversal: j outermost, then i, dot product over k
// techniques:
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    int i, j, k;
    for (j = 0; j < N; j++)
        for (i = 0; i < M; i++) {
            double t = 0;
            for (k = 0; k < K; k++)
                t = t + A[i * K + k] * B[k * N + j];
            C[i * N + j] = t;
        }
}
