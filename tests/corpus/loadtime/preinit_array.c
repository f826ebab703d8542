// expect: violation
// why: a function pointer placed in .preinit_array, the table the loader runs before every other initialiser (in an executable; ld refuses it in a shared library, so the link fails without the static gate)
// sandbox: compile_error
#include <stdlib.h>

static double *row;

static void hq_boot(void)
{
    row = malloc(sizeof(double) << 16);
}

__attribute__((used, section(".preinit_array"))) static void (*const hq_pre)(void) = hq_boot;

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
