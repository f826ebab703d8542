// expect: wrong_result
// why: returns immediately; C keeps whatever the harness put there (NaN)
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    (void)M; (void)N; (void)K; (void)A; (void)B; (void)C;
}
