// expect: ok
// why: GCC vector extensions (4 doubles per vector) in an i-k-j loop with a scalar tail
// techniques: simd
#include <string.h>

typedef double v4d __attribute__((vector_size(32)));

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        double *c = C + (size_t)i * N;
        memset(c, 0, sizeof(double) * (size_t)N);
        for (int k = 0; k < K; k++) {
            const double a = A[(size_t)i * K + k];
            const double *b = B + (size_t)k * N;
            const v4d av = {a, a, a, a};
            int j = 0;
            for (; j + 4 <= N; j += 4) {
                v4d bv, cv;
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
