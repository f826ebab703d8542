// expect: timeout
// why: the row counter is never advanced, so the outer while loop never ends
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    int i = 0;
    while (i < M) {
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
        /* i++ forgotten */
    }
}
