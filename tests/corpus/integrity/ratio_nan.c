// expect: wrong_result
// why: honest on small shapes and the first benchmark call, then alternates rows whose check ratio is Inf/Inf = NaN (values near DBL_MAX) with rows whose gauge overflows (ratio 0): the old running maximum let the finite row overwrite the NaN
static long calls;

static void honest(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    if (M < 128 || ++calls <= 1) {
        honest(M, N, K, A, B, C);
        return;
    }
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++)
            C[i * N + j] = (i & 1) ? ((j & 1) ? 1e306 : -1e306) : 1.7e308;
}
