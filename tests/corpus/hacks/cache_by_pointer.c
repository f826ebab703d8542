// expect: wrong_result
// why: memoises C keyed on the argument pointers and sizes; correct once, then replays a stale answer
#include <stdlib.h>
#include <string.h>

static const double *last_a, *last_b;
static int last_m, last_n, last_k;
static double *saved;

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    size_t bytes = (size_t)M * N * sizeof(double);
    if (saved && A == last_a && B == last_b && M == last_m && N == last_n && K == last_k) {
        memcpy(C, saved, bytes);
        return;
    }
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[(size_t)i * K + k] * B[(size_t)k * N + j];
            C[(size_t)i * N + j] = s;
        }
    free(saved);
    saved = malloc(bytes);
    if (saved)
        memcpy(saved, C, bytes);
    last_a = A; last_b = B; last_m = M; last_n = N; last_k = K;
}
