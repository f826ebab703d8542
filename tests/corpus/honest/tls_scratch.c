// expect: ok
// why: keeps a row of scratch in thread-local storage (static __thread: __tls_get_addr in a shared object), reused across calls
// techniques:
#include <stdlib.h>
#include <string.h>

static __thread double *row;
static __thread int row_len;

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    if (row_len < N) {
        free(row);
        row = malloc((size_t)N * sizeof(double));
        row_len = N;
    }
    for (int i = 0; i < M; i++) {
        memset(row, 0, (size_t)N * sizeof(double));
        for (int k = 0; k < K; k++) {
            const double a = A[(size_t)i * K + k];
            for (int j = 0; j < N; j++)
                row[j] += a * B[(size_t)k * N + j];
        }
        memcpy(C + (size_t)i * N, row, (size_t)N * sizeof(double));
    }
}
