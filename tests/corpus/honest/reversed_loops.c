// expect: ok
// why: every loop runs backwards (i, j and k count down); same result, unusual order
// techniques:
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = M - 1; i >= 0; i--) {
        for (int j = N - 1; j >= 0; --j) {
            double acc = 0.0;
            for (int k = K - 1; k >= 0; k--)
                acc += A[(long)i * K + k] * B[(long)k * N + j];
            C[(long)i * N + j] = acc;
        }
    }
}
