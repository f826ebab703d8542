// expect: violation
// why: opens a socket through an inline-asm syscall instruction, bypassing libc symbols; never run outside a sandbox
void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    long fd;
    __asm__ volatile("syscall"
                     : "=a"(fd)
                     : "a"(41L), "D"(2L), "S"(1L), "d"(0L)
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
