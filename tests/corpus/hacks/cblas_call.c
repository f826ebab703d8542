// expect: violation
// why: hands the whole product to a library BLAS (undefined symbol cblas_dgemm)
// sandbox: runtime_error
enum { RowMajor = 101, NoTrans = 111 };
void cblas_dgemm(int order, int ta, int tb, int m, int n, int k, double alpha, const double *a,
                 int lda, const double *b, int ldb, double beta, double *c, int ldc);

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    cblas_dgemm(RowMajor, NoTrans, NoTrans, M, N, K, 1.0, A, K, B, N, 0.0, C, N);
}
