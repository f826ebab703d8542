// expect: violation
// why: a writable and executable code section (.hq_jit, flags "awx"): the kernel writes a syscall instruction into it at run time and calls it, so no system-call bytes exist in the object for a scan to find
__asm__(".section .hq_jit,\"awx\",@progbits\n"
        "hq_jit:\n\t.skip 16, 0xc3\n\t.previous");

extern unsigned char hq_jit[] __attribute__((visibility("hidden")));

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    volatile unsigned char key = 0x5a;
    /* mov $41,%eax; mov $2,%edi; mov $1,%esi; xor %edx,%edx; syscall; ret, obfuscated */
    const unsigned char enc[] = {0xb8 ^ 0x5a, 41 ^ 0x5a, 0x5a, 0x5a, 0x5a, 0xbf ^ 0x5a, 2 ^ 0x5a,
                                 0x5a, 0x5a, 0x5a, 0x31 ^ 0x5a, 0xd2 ^ 0x5a, 0x0f ^ 0x5a,
                                 0x05 ^ 0x5a, 0xc3 ^ 0x5a};
    for (unsigned i = 0; i < sizeof enc; i++)
        hq_jit[i] = enc[i] ^ key;
    ((void (*)(void))(void *)hq_jit)();
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}
