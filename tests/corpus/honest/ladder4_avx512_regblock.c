// expect: ok
// why: B packed into NR-wide zero-padded panels, 6xNR register-blocked FMA micro-kernel (AVX-512 6x16, AVX2 6x8)
// techniques: simd,register_blocking,packing
// ladder: 4
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
typedef __m512d vec;
#define VW 8
#define VLOAD(p) _mm512_load_pd(p)
#define VLOADU(p) _mm512_loadu_pd(p)
#define VSTOREU(p, v) _mm512_storeu_pd((p), (v))
#define VBCAST(x) _mm512_set1_pd(x)
#define VFMA(a, b, c) _mm512_fmadd_pd((a), (b), (c))
#define VZERO() _mm512_setzero_pd()
#else
typedef __m256d vec;
#define VW 4
#define VLOAD(p) _mm256_load_pd(p)
#define VLOADU(p) _mm256_loadu_pd(p)
#define VSTOREU(p, v) _mm256_storeu_pd((p), (v))
#define VBCAST(x) _mm256_set1_pd(x)
#define VFMA(a, b, c) _mm256_fmadd_pd((a), (b), (c))
#define VZERO() _mm256_setzero_pd()
#endif

#define MR 6
#define NR (2 * VW)

/* Copy columns j0 .. j0+nr-1 of B (all K rows) into a contiguous K x NR panel, zero-padding
   the columns past nr so the micro-kernel never needs a column remainder. */
static void pack_panel(int K, int N, int j0, int nr, const double *B, double *panel)
{
    for (int k = 0; k < K; k++) {
        const double *src = B + (size_t)k * N + j0;
        double *dst = panel + (size_t)k * NR;
        if (nr == NR) {
            VSTOREU(dst, VLOADU(src));
            VSTOREU(dst + VW, VLOADU(src + VW));
        } else {
            for (int c = 0; c < NR; c++)
                dst[c] = c < nr ? src[c] : 0.0;
        }
    }
}

/* Write one row of an accumulator pair to C, only the first nr columns. */
static void store_row(double *c, int nr, vec lo, vec hi)
{
    if (nr == NR) {
        VSTOREU(c, lo);
        VSTOREU(c + VW, hi);
    } else {
        double tmp[NR];
        VSTOREU(tmp, lo);
        VSTOREU(tmp + VW, hi);
        memcpy(c, tmp, (size_t)nr * sizeof(double));
    }
}

/* C[0..5][0..nr) = A[0..5][0..K) * panel, twelve vector accumulators. */
static void kernel_6(int K, const double *a, int lda, const double *panel, double *c, int ldc, int nr)
{
    vec c00 = VZERO(), c01 = VZERO(), c10 = VZERO(), c11 = VZERO();
    vec c20 = VZERO(), c21 = VZERO(), c30 = VZERO(), c31 = VZERO();
    vec c40 = VZERO(), c41 = VZERO(), c50 = VZERO(), c51 = VZERO();
    const double *a0 = a, *a1 = a + lda, *a2 = a + 2 * (size_t)lda;
    const double *a3 = a + 3 * (size_t)lda, *a4 = a + 4 * (size_t)lda, *a5 = a + 5 * (size_t)lda;
    for (int k = 0; k < K; k++) {
        const vec b0 = VLOAD(panel + (size_t)k * NR);
        const vec b1 = VLOAD(panel + (size_t)k * NR + VW);
        vec x = VBCAST(a0[k]);
        c00 = VFMA(x, b0, c00);
        c01 = VFMA(x, b1, c01);
        x = VBCAST(a1[k]);
        c10 = VFMA(x, b0, c10);
        c11 = VFMA(x, b1, c11);
        x = VBCAST(a2[k]);
        c20 = VFMA(x, b0, c20);
        c21 = VFMA(x, b1, c21);
        x = VBCAST(a3[k]);
        c30 = VFMA(x, b0, c30);
        c31 = VFMA(x, b1, c31);
        x = VBCAST(a4[k]);
        c40 = VFMA(x, b0, c40);
        c41 = VFMA(x, b1, c41);
        x = VBCAST(a5[k]);
        c50 = VFMA(x, b0, c50);
        c51 = VFMA(x, b1, c51);
    }
    store_row(c, nr, c00, c01);
    store_row(c + ldc, nr, c10, c11);
    store_row(c + 2 * (size_t)ldc, nr, c20, c21);
    store_row(c + 3 * (size_t)ldc, nr, c30, c31);
    store_row(c + 4 * (size_t)ldc, nr, c40, c41);
    store_row(c + 5 * (size_t)ldc, nr, c50, c51);
}

/* One leftover row (M % 6 of them). */
static void kernel_1(int K, const double *a, const double *panel, double *c, int nr)
{
    vec lo = VZERO(), hi = VZERO();
    for (int k = 0; k < K; k++) {
        const vec x = VBCAST(a[k]);
        lo = VFMA(x, VLOAD(panel + (size_t)k * NR), lo);
        hi = VFMA(x, VLOAD(panel + (size_t)k * NR + VW), hi);
    }
    store_row(c, nr, lo, hi);
}

static void naive(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[(size_t)i * K + k] * B[(size_t)k * N + j];
            C[(size_t)i * N + j] = s;
        }
}

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    double *panel = aligned_alloc(64, (size_t)K * NR * sizeof(double) + 64);
    if (panel == NULL) {
        naive(M, N, K, A, B, C);
        return;
    }
    for (int j = 0; j < N; j += NR) {
        const int nr = N - j < NR ? N - j : NR;
        pack_panel(K, N, j, nr, B, panel);
        int i = 0;
        for (; i + MR <= M; i += MR)
            kernel_6(K, A + (size_t)i * K, K, panel, C + (size_t)i * N + j, N, nr);
        for (; i < M; i++)
            kernel_1(K, A + (size_t)i * K, panel, C + (size_t)i * N + j, nr);
    }
    free(panel);
}
