// expect: wrong_result
// why: k blocked by 64 without a remainder: exact at 256^3, drops the partial k block on odd shapes
#include <string.h>
#define KB 64

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    memset(C, 0, sizeof(double) * M * N);
    for (int kk = 0; kk + KB <= K; kk += KB)
        for (int i = 0; i < M; i++)
            for (int k = kk; k < kk + KB; k++) {
                const double a = A[i * K + k];
                for (int j = 0; j < N; j++)
                    C[i * N + j] += a * B[k * N + j];
            }
}
