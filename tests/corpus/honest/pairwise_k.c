// expect: ok
// why: pairwise (recursive halving) summation over k instead of a running sum, no Kahan terms
// techniques:
static double pairwise_dot(const double *a, const double *b, int n, int ldb)
{
    if (n <= 8) {
        double s = 0.0;
        for (int k = 0; k < n; k++)
            s += a[k] * b[(long)k * ldb];
        return s;
    }
    const int h = n / 2;
    return pairwise_dot(a, b, h, ldb) + pairwise_dot(a + h, b + (long)h * ldb, n - h, ldb);
}

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++)
            C[(long)i * N + j] = pairwise_dot(A + (long)i * K, B + j, K, N);
}
