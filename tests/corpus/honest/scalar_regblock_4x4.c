// expect: ok
// why: 4x4 tile of C held in sixteen scalar accumulators over the whole k loop; edges done one element at a time
// techniques: register_blocking
static double dot(const double *a, const double *b, int K, int N)
{
    double s = 0.0;
    for (int k = 0; k < K; k++)
        s += a[k] * b[k * N];
    return s;
}

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    const int M4 = M - M % 4, N4 = N - N % 4;
    for (int i = 0; i < M4; i += 4) {
        for (int j = 0; j < N4; j += 4) {
            double c00 = 0, c01 = 0, c02 = 0, c03 = 0;
            double c10 = 0, c11 = 0, c12 = 0, c13 = 0;
            double c20 = 0, c21 = 0, c22 = 0, c23 = 0;
            double c30 = 0, c31 = 0, c32 = 0, c33 = 0;
            for (int k = 0; k < K; k++) {
                const double *b = B + k * N + j;
                const double b0 = b[0], b1 = b[1], b2 = b[2], b3 = b[3];
                const double a0 = A[i * K + k], a1 = A[(i + 1) * K + k];
                const double a2 = A[(i + 2) * K + k], a3 = A[(i + 3) * K + k];
                c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
                c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
                c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
                c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
            }
            double *c = C + i * N + j;
            c[0] = c00; c[1] = c01; c[2] = c02; c[3] = c03;
            c += N;
            c[0] = c10; c[1] = c11; c[2] = c12; c[3] = c13;
            c += N;
            c[0] = c20; c[1] = c21; c[2] = c22; c[3] = c23;
            c += N;
            c[0] = c30; c[1] = c31; c[2] = c32; c[3] = c33;
        }
        for (int r = i; r < i + 4; r++)
            for (int j = N4; j < N; j++)
                C[r * N + j] = dot(A + r * K, B + j, K, N);
    }
    for (int r = M4; r < M; r++)
        for (int j = 0; j < N; j++)
            C[r * N + j] = dot(A + r * K, B + j, K, N);
}
