// expect: violation
// why: legacy 32-bit system call gate (int $0x80) from inline asm; the object holds an int 0x80 instruction
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    int pid;
    __asm__ volatile("int $0x80" : "=a"(pid) : "a"(20) : "memory");
    (void)pid;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}
