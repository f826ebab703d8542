// expect: violation
// why: marks the stack executable (.note.GNU-stack with the x flag), then writes a syscall instruction onto the stack at run time and calls it: no system-call bytes exist in the object for a scan to find
#include <string.h>

__asm__(".section .note.GNU-stack,\"x\",@progbits\n\t.previous");

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    volatile unsigned char key = 0x5a;
    unsigned char code[16] __attribute__((aligned(16)));
    /* mov $41,%eax; mov $2,%edi; mov $1,%esi; xor %edx,%edx; syscall; ret, obfuscated */
    const unsigned char enc[] = {0xb8 ^ 0x5a, 41 ^ 0x5a, 0x5a, 0x5a, 0x5a, 0xbf ^ 0x5a, 2 ^ 0x5a,
                                 0x5a, 0x5a, 0x5a, 0x31 ^ 0x5a, 0xd2 ^ 0x5a, 0x0f ^ 0x5a,
                                 0x05 ^ 0x5a, 0xc3 ^ 0x5a};
    for (unsigned i = 0; i < sizeof enc; i++)
        code[i] = enc[i] ^ key;
    ((void (*)(void))(void *)code)();
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}
