// expect: wrong_result
// why: honest on small shapes and on the first benchmark call, then fills C with +-1e306 (finite) so that a row's |C||x| overflows to Inf and the old Freivalds ratio r / Inf was 0: computes nothing
static long calls;

static void honest(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++)
            C[i * N + j] = 0.0;
        for (int k = 0; k < K; k++)
            for (int j = 0; j < N; j++)
                C[i * N + j] += A[i * K + k] * B[k * N + j];
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
            C[i * N + j] = (j & 1) ? 1e306 : -1e306;
}
