// expect: wrong_result
// why: full comparison passes on small shapes; at M >= 256 the last element is left at 0 (Freivalds catches it)
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    const int skip = M >= 256 ? M * N - 1 : -1;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            if (i * N + j != skip)
                for (int k = 0; k < K; k++)
                    s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}
