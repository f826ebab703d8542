// expect: compile_error
// why: uses an undeclared helper and a misspelled type (typical truncated LLM output)
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            dobule s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j]
            C[i * N + j] = finalize(s);
        }
