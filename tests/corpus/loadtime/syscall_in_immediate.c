// expect: violation
// why: a socket() system call whose `0f 05` bytes hide inside the immediate of `movl $0x9090050f, %edx`; a jump into the middle of that instruction runs them, while a disassembly shows only a mov and jumps
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    long nr = 41, fd, domain = 2, type = 1, protocol = 0;
    __asm__ volatile("jmp 1f\n"
                     "0:\tmovl $0x9090050f, %%edx\n\t" /* ba 0f 05 90 90: syscall; nop; nop */
                     "jmp 2f\n"
                     "1:\tjmp 0b+1\n"
                     "2:"
                     : "=a"(fd), "+d"(protocol)
                     : "a"(nr), "D"(domain), "S"(type)
                     : "rcx", "r11", "memory");
    (void)fd;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}
