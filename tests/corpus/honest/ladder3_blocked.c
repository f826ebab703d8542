// expect: ok
// why: cache-blocked i-k-j (MIN-bounded tiles) streaming four rows of the B tile per pass over a C row
// techniques: cache_blocking
// ladder: 3
#include <string.h>

#define BI 64
#define BK 64
#define BJ 256
#define MIN(a, b) ((a) < (b) ? (a) : (b))

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    memset(C, 0, (size_t)M * N * sizeof(double));
    for (int jj = 0; jj < N; jj += BJ) {
        const int j_end = MIN(jj + BJ, N);
        for (int kk = 0; kk < K; kk += BK) {
            const int k_end = MIN(kk + BK, K);
            for (int ii = 0; ii < M; ii += BI) {
                const int i_end = MIN(ii + BI, M);
                for (int i = ii; i < i_end; i++) {
                    double *restrict c = C + (size_t)i * N;
                    const double *a = A + (size_t)i * K;
                    int k = kk;
                    /* four k at a time: one load and store of c[j] per four FMAs */
                    for (; k + 4 <= k_end; k += 4) {
                        const double a0 = a[k], a1 = a[k + 1], a2 = a[k + 2], a3 = a[k + 3];
                        const double *restrict b0 = B + (size_t)k * N;
                        const double *restrict b1 = b0 + N;
                        const double *restrict b2 = b1 + N;
                        const double *restrict b3 = b2 + N;
                        for (int j = jj; j < j_end; j++)
                            c[j] += a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j];
                    }
                    for (; k < k_end; k++) {
                        const double a0 = a[k];
                        const double *restrict b0 = B + (size_t)k * N;
                        for (int j = jj; j < j_end; j++)
                            c[j] += a0 * b0[j];
                    }
                }
            }
        }
    }
}
