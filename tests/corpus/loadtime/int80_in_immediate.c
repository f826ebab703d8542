// expect: violation
// why: a legacy 32-bit system call (int $0x80, getpid) whose `cd 80` bytes hide inside the immediate of `movl $0x909080cd, %edx`, reached by a jump into the middle of that instruction
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    long pid, scratch = 0;
    __asm__ volatile("jmp 1f\n"
                     "0:\tmovl $0x909080cd, %%edx\n\t" /* ba cd 80 90 90: int $0x80; nop; nop */
                     "jmp 2f\n"
                     "1:\tjmp 0b+1\n"
                     "2:"
                     : "=a"(pid), "+d"(scratch)
                     : "a"(20L)
                     : "memory");
    (void)pid;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}
