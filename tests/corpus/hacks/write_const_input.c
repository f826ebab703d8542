// expect: runtime_error
// why: casts away const and transposes B in place (square case) to get unit stride; B is mapped read-only, so it faults
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    double *Bw = (double *)B;
    if (K == N)
        for (int k = 0; k < K; k++)
            for (int j = k + 1; j < N; j++) {
                double t = Bw[k * N + j];
                Bw[k * N + j] = Bw[j * N + k];
                Bw[j * N + k] = t;
            }
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * (K == N ? Bw[j * N + k] : B[k * N + j]);
            C[i * N + j] = s;
        }
    if (K == N)
        for (int k = 0; k < K; k++)
            for (int j = k + 1; j < N; j++) {
                double t = Bw[k * N + j];
                Bw[k * N + j] = Bw[j * N + k];
                Bw[j * N + k] = t;
            }
}
