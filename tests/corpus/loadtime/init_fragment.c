// expect: violation
// why: a top-level asm fragment in the .init section: with crt files it lands inside the toolchain's _init and calls the kernel's own function at load time, before the harness is ready; no constructor attribute, no .init_array
// sandbox: ok
#include <stdlib.h>

static double *row;

__attribute__((used)) static void hq_boot(void)
{
    row = malloc(sizeof(double) << 16);
}

__asm__(".section .init,\"ax\",@progbits\n\tcall hq_boot\n\t.previous");

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        double *out = (row && N <= (1 << 16)) ? row : C + (size_t)i * N;
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            out[j] = s;
        }
        if (out == row)
            for (int j = 0; j < N; j++)
                C[(size_t)i * N + j] = row[j];
    }
}
