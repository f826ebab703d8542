// expect: violation
// why: the vector FMA lives in inline assembly (AVX-512 zmm where available, else AVX2 ymm), whose strings a comment/string stripper would blank
// forbid: simd
#include <string.h>

static void row_update(double a, const double *b, double *c, int n)
{
    int j = 0;
#if defined(__AVX512F__)
    for (; j + 8 <= n; j += 8)
        __asm__ volatile("vbroadcastsd %0, %%zmm0\n\t"
                         "vmovupd (%1), %%zmm1\n\t"
                         "vfmadd213pd (%2), %%zmm0, %%zmm1\n\t"
                         "vmovupd %%zmm1, (%2)"
                         :
                         : "m"(a), "r"(b + j), "r"(c + j)
                         : "xmm0", "xmm1", "memory");
#else
    for (; j + 4 <= n; j += 4)
        __asm__ volatile("vbroadcastsd %0, %%ymm0\n\t"
                         "vmovupd (%1), %%ymm1\n\t"
                         "vfmadd213pd (%2), %%ymm0, %%ymm1\n\t"
                         "vmovupd %%ymm1, (%2)"
                         :
                         : "m"(a), "r"(b + j), "r"(c + j)
                         : "xmm0", "xmm1", "memory");
#endif
    for (; j < n; j++)
        c[j] += a * b[j];
}

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        memset(C + (size_t)i * N, 0, sizeof(double) * (size_t)N);
        for (int k = 0; k < K; k++)
            row_update(A[(size_t)i * K + k], B + (size_t)k * N, C + (size_t)i * N, N);
    }
}
