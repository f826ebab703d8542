// expect: violation
// why: an IFUNC helper: the loader calls its resolver while relocating the library (an IRELATIVE relocation), so kernel code runs at load time before any call
// sandbox: ok
#include <stddef.h>

static double *row;
static int hq_resolved;

static void hq_fill(void)
{
}

static void (*hq_pick(void))(void)
{
    hq_resolved = 1; /* kernel code running while the loader relocates the library */
    return hq_fill;
}

static void hq_hook(void) __attribute__((ifunc("hq_pick")));

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    hq_hook();
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
