// expect: violation
// why: ships its own main() test driver next to dgemm (extra defined global symbol main)
// sandbox: ok
#include <stdio.h>

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}

int main(void)
{
    double a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8}, c[4];
    dgemm(2, 2, 2, a, b, c);
    printf("%g %g %g %g\n", c[0], c[1], c[2], c[3]);
    return 0;
}
