// expect: wrong_result
// why: exact on the fully compared calls it can predict (small check shapes, the first benchmark call), then skips the last k term on every later call; Freivalds on every call and full comparisons drawn at random after the call catch it
static long calls;

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    int kk = (M < 128 || ++calls <= 1) ? K : K - 1;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < kk; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}
