// expect: violation
// why: prints a fake benchmark line and exits the process before the harness can time or verify (undefined printf/exit)
// sandbox: runtime_error
#include <stdio.h>
#include <stdlib.h>

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    (void)A; (void)B; (void)C;
    printf("dgemm %dx%dx%d: 5120.00 GFLOPS, max error 0.0e+00, PASSED\n", M, N, K);
    fflush(stdout);
    exit(0);
}
