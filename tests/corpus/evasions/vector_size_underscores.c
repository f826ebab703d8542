// expect: violation
// why: GCC vector extension spelled __vector_size__ (and built through a macro) so a grep for vector_size misses it
// forbid: simd
#include <string.h>

#define VEC_ATTR(n) __attribute__((__vector_size__(n)))
typedef double v4 VEC_ATTR(32);

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        double *c = C + (size_t)i * N;
        memset(c, 0, sizeof(double) * (size_t)N);
        for (int k = 0; k < K; k++) {
            const double a = A[(size_t)i * K + k];
            const double *b = B + (size_t)k * N;
            const v4 av = {a, a, a, a};
            int j = 0;
            for (; j + 4 <= N; j += 4) {
                v4 bv, cv;
                memcpy(&bv, b + j, sizeof bv);
                memcpy(&cv, c + j, sizeof cv);
                cv += av * bv;
                memcpy(c + j, &cv, sizeof cv);
            }
            for (; j < N; j++)
                c[j] += a * b[j];
        }
    }
}
