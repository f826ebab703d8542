// expect: violation
// why: a 4x4 register tile whose dimensions are written with sizeof (double acc[sizeof(double)/2][R], R = sizeof(long)/2), not literals
// forbid: register_blocking
#define R (sizeof(long) / 2)

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    const int mr = (int)(sizeof(double) / 2), nr = (int)R;
    for (int i = 0; i < M; i += mr)
        for (int j = 0; j < N; j += nr) {
            double acc[sizeof(double) / 2][R] = {{0.0}};
            for (int k = 0; k < K; k++) {
                double a0 = i + 0 < M ? A[(i + 0) * K + k] : 0.0;
                double a1 = i + 1 < M ? A[(i + 1) * K + k] : 0.0;
                double a2 = i + 2 < M ? A[(i + 2) * K + k] : 0.0;
                double a3 = i + 3 < M ? A[(i + 3) * K + k] : 0.0;
                for (int c = 0; c < nr; c++) {
                    const double b = j + c < N ? B[k * N + j + c] : 0.0;
                    acc[0][c] += a0 * b;
                    acc[1][c] += a1 * b;
                    acc[2][c] += a2 * b;
                    acc[3][c] += a3 * b;
                }
            }
            for (int r = 0; r < mr && i + r < M; r++)
                for (int c = 0; c < nr && j + c < N; c++)
                    C[(i + r) * N + j + c] = acc[r][c];
        }
}
