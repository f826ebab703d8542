// expect: wrong_result
// why: correct on the small verification shapes, returns before doing any work once M > 128
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    if (M > 128)
        return;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}
