// expect: wrong_result
// why: memoises C keyed on a "cheap hash" (sizes and integer parts of two samples of A): collides for fresh inputs in (-1, 1)
#include <stdlib.h>
#include <string.h>

static long long last_key = -1;
static double *saved;

static long long cheap_hash(int M, int N, int K, const double *A)
{
    long long h = ((long long)M * 73856093) ^ ((long long)N * 19349663) ^ ((long long)K * 83492791);
    h ^= (long long)A[0] * 2654435761LL;
    h ^= (long long)A[(size_t)M * K - 1] * 40503LL;
    return h;
}

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    const long long key = cheap_hash(M, N, K, A);
    const size_t count = (size_t)M * N;
    if (saved && key == last_key) {
        memcpy(C, saved, count * sizeof(double));
        return;
    }
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[(size_t)i * K + k] * B[(size_t)k * N + j];
            C[(size_t)i * N + j] = s;
        }
    double *p = realloc(saved, count * sizeof(double));
    if (p) {
        saved = p;
        memcpy(saved, C, count * sizeof(double));
        last_key = key;
    }
}
