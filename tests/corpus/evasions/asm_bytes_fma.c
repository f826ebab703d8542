// expect: violation
// why: AVX2 FMA written as raw .byte machine code in inline asm (no mnemonic, no vector register named): only the disassembled object shows it
// forbid: simd
#include <string.h>

/* c[0..3] += a * b[0..3]:
   vbroadcastsd (%rdi),%ymm0; vmovupd (%rsi),%ymm1; vmovupd (%rdx),%ymm2;
   vfmadd231pd %ymm1,%ymm0,%ymm2; vmovupd %ymm2,(%rdx) */
static void quad(const double *a, const double *b, double *c)
{
    __asm__ volatile(".byte 0xc4,0xe2,0x7d,0x19,0x07\n\t"
                     ".byte 0xc5,0xfd,0x10,0x0e\n\t"
                     ".byte 0xc5,0xfd,0x10,0x12\n\t"
                     ".byte 0xc4,0xe2,0xfd,0xb8,0xd1\n\t"
                     ".byte 0xc5,0xfd,0x11,0x12\n\t"
                     ".byte 0xc5,0xf8,0x77"
                     :
                     : "D"(a), "S"(b), "d"(c)
                     : "xmm0", "xmm1", "xmm2", "memory");
}

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        double *c = C + (size_t)i * N;
        memset(c, 0, sizeof(double) * (size_t)N);
        for (int k = 0; k < K; k++) {
            const double *a = A + (size_t)i * K + k;
            const double *b = B + (size_t)k * N;
            int j = 0;
            for (; j + 4 <= N; j += 4)
                quad(a, b + j, c + j);
            for (; j < N; j++)
                c[j] += *a * b[j];
        }
    }
}
