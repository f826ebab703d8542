/* dgemm_judge.c: judge side of the DGEMM family (trusted parent).
 *
 * Buffers: 0 = A (MxK, input), 1 = B (KxN, input), 2 = C (MxN, output); row-major doubles.
 * Verification follows notes/evaluation.md section 2.2:
 *  - fast check (every call): Freivalds with 2 Rademacher probes x drawn after the call,
 *    r = C x - A (B x), s = |A| (|B| |x|), ratio = max_i |r_i| / (u s_i), accepted iff
 *    ratio <= tau = 3K + N + 16, u = 2^-53. Derived from the classical bound
 *    |C^ - AB| <= gamma_K |A||B| (Higham 3.5), valid for any summation order, FMA or not:
 *    |r| <= 3 gamma_K |A||B||x| + gamma_N |C^||x|, and an accepted C^ has
 *    |C^| <= (1 + gamma_K) |A||B|, so the gauge needs only the judge's own inputs. The
 *    candidate controls C and must not control the gauge: a gauge with |C||x| in it let
 *    huge values in C overflow it to Inf and drive the ratio to 0.
 *    Every intermediate (C x, A (B x), the gauge, r, the ratio) must be finite: anything
 *    else fails at once.
 *  - full check (small shapes): |C - Cref| <= 2 gamma_K (|A||B|) elementwise, with the
 *    judge's own reference Cref (whose error obeys the same bound, hence the 2), and
 *    |A||B| bounded above by rowsum(|A|) colmax(|B|) (reference() says why).
 *    Reported ratio = max |C - Cref| / (u rowsum_i colmax_j); bound = 2K / (1 - K u).
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../harness/problem.h"

#define U_ROUND 0x1.0p-53
#define TINY 1e-300 /* keeps ratios finite if a gauge is exactly 0 */

enum { BUF_A, BUF_B, BUF_C };

static int dgemm_parse_shape(const char *text, hq_shape *out)
{
    long long m, n, k;
    char tail;
    if (sscanf(text, " %lld , %lld , %lld %c", &m, &n, &k, &tail) != 3)
        return -1;
    if (m < 1 || n < 1 || k < 1)
        return -1;
    /* candidates index with int (i*N + j), so every matrix must fit in INT_MAX elements */
    const long long lim = 2147483647LL;
    if (m > lim / k || k > lim / n || m > lim / n)
        return -1;
    memset(out, 0, sizeof *out);
    out->d[0] = m, out->d[1] = n, out->d[2] = k;
    return 0;
}

static void dgemm_format_shape(const hq_shape *s, char *out, size_t len)
{
    snprintf(out, len, "%lld,%lld,%lld", (long long)s->d[0], (long long)s->d[1],
             (long long)s->d[2]);
}

static size_t dgemm_buf_bytes(const hq_shape *s, int buf)
{
    size_t m = (size_t)s->d[0], n = (size_t)s->d[1], k = (size_t)s->d[2];
    switch (buf) {
    case BUF_A: return m * k * sizeof(double);
    case BUF_B: return k * n * sizeof(double);
    default: return m * n * sizeof(double);
    }
}

static double dgemm_flops(const hq_shape *s)
{
    return 2.0 * (double)s->d[0] * (double)s->d[1] * (double)s->d[2];
}

static double dgemm_work(const hq_shape *s)
{
    return (double)s->d[0] * (double)s->d[1] * (double)s->d[2];
}

static void dgemm_fill(const hq_shape *s, void *const *bufs, hq_rng *rng)
{
    size_t m = (size_t)s->d[0], n = (size_t)s->d[1], k = (size_t)s->d[2];
    double *a = bufs[BUF_A], *b = bufs[BUF_B];
    for (size_t i = 0; i < m * k; i++)
        a[i] = hq_rng_sym(rng);
    for (size_t i = 0; i < k * n; i++)
        b[i] = hq_rng_sym(rng);
}

/* Returns the flat index of the first non-finite element of C, or -1. */
static long first_nonfinite(const double *c, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (!isfinite(c[i]))
            return (long)i;
    return -1;
}

/* y1 = R x1, y2 = R x2, ya = |R| 1 for a rows x cols matrix R (|x| = 1 for Rademacher x). */
static void matvec3(const double *r, size_t rows, size_t cols, const double *x1,
                    const double *x2, double *y1, double *y2, double *ya)
{
    for (size_t i = 0; i < rows; i++) {
        const double *row = r + i * cols;
        double s1 = 0, s2 = 0, sa = 0;
        for (size_t j = 0; j < cols; j++) {
            s1 += row[j] * x1[j];
            s2 += row[j] * x2[j];
            sa += fabs(row[j]);
        }
        y1[i] = s1, y2[i] = s2, ya[i] = sa;
    }
}

/* z = A y for two vectors, and g = |A| w (w = |B| 1, so g = |A|(|B||x|)). */
static void matvec_a(const double *a, size_t m, size_t k, const double *y1,
                     const double *y2, const double *w, double *z1, double *z2, double *g)
{
    for (size_t i = 0; i < m; i++) {
        const double *row = a + i * k;
        double s1 = 0, s2 = 0, sg = 0;
        for (size_t j = 0; j < k; j++) {
            s1 += row[j] * y1[j];
            s2 += row[j] * y2[j];
            sg += fabs(row[j]) * w[j];
        }
        z1[i] = s1, z2[i] = s2, g[i] = sg;
    }
}

static void nonfinite_msg(const double *c, long idx, size_t n, char *msg, size_t len)
{
    snprintf(msg, len, "%s in C[%ld,%ld]%s", isnan(c[idx]) ? "NaN" : "Inf", idx / (long)n,
             idx % (long)n, isnan(c[idx]) ? " (element never written?)" : "");
}

static int dgemm_fast_check(const hq_shape *s, void *const *bufs, hq_rng *probe,
                            double *ratio, char *msg, size_t len)
{
    size_t m = (size_t)s->d[0], n = (size_t)s->d[1], k = (size_t)s->d[2];
    const double *a = bufs[BUF_A], *b = bufs[BUF_B], *c = bufs[BUF_C];
    *ratio = NAN;
    long bad = first_nonfinite(c, m * n);
    if (bad >= 0) {
        nonfinite_msg(c, bad, n, msg, len);
        return -1;
    }
    size_t vlen = 2 * n + 3 * k + 6 * m;
    double *v = malloc(vlen * sizeof(double));
    if (!v) {
        snprintf(msg, len, "judge out of memory in the Freivalds check");
        return -2;
    }
    double *x1 = v, *x2 = x1 + n, *y1 = x2 + n, *y2 = y1 + k, *w = y2 + k;
    double *z1 = w + k, *z2 = z1 + m, *g = z2 + m, *c1 = g + m, *c2 = c1 + m, *cc = c2 + m;
    for (size_t j = 0; j < n; j++) {
        uint64_t bits = hq_rng_next(probe);
        x1[j] = (bits & 1) ? 1.0 : -1.0;
        x2[j] = (bits & 2) ? 1.0 : -1.0;
    }
    matvec3(b, k, n, x1, x2, y1, y2, w); /* B x, and |B| 1 */
    matvec_a(a, m, k, y1, y2, w, z1, z2, g); /* A (B x), and |A| (|B| 1) */
    matvec3(c, m, n, x1, x2, c1, c2, cc); /* C x (|C| 1 is not used: C is the candidate's) */
    double worst = 0, tau = 3.0 * (double)k + (double)n + 16.0;
    size_t worst_i = 0;
    int rc = 0;
    for (size_t i = 0; i < m && rc == 0; i++) {
        double r = fmax(fabs(c1[i] - z1[i]), fabs(c2[i] - z2[i]));
        double q = r / (U_ROUND * g[i] + TINY);
        if (!isfinite(c1[i]) || !isfinite(c2[i]) || !isfinite(z1[i]) || !isfinite(z2[i]) ||
            !isfinite(g[i]) || !isfinite(r) || !isfinite(q)) {
            snprintf(msg, len, "non-finite value in the Freivalds check at row %zu "
                               "(C has values too large to be a product of these inputs)", i);
            rc = -1;
        } else if (q > worst)
            worst = q, worst_i = i;
    }
    free(v);
    if (rc != 0)
        return rc;
    *ratio = worst;
    if (worst <= tau)
        return 0;
    snprintf(msg, len, "Freivalds ratio %.3g > tau %.0f (worst row %zu)", worst, tau, worst_i);
    return -1;
}

/* cref = A B, ikj order so the inner loop vectorises, and a gauge that bounds |A||B|
 * elementwise from O(n^2) sums: (|A||B|)_ij = sum_k |a_ik||b_kj| <= (sum_k |a_ik|) *
 * (max_k |b_kj|) = rowsum[i] * colmax[j]. For inputs uniform in [-1, 1) it is about twice
 * the exact gauge, and costs no second product (the full check stays one matmul). */
static void reference(const double *restrict a, const double *restrict b, size_t m, size_t n,
                      size_t k, double *restrict cref, double *restrict rowsum,
                      double *restrict colmax)
{
    memset(cref, 0, m * n * sizeof(double));
    for (size_t j = 0; j < n; j++)
        colmax[j] = 0;
    for (size_t p = 0; p < k; p++)
        for (size_t j = 0; j < n; j++)
            colmax[j] = fmax(colmax[j], fabs(b[p * n + j]));
    for (size_t i = 0; i < m; i++) {
        double *restrict cr = cref + i * n, rs = 0;
        for (size_t p = 0; p < k; p++) {
            const double aip = a[i * k + p], *restrict br = b + p * n;
            rs += fabs(aip);
            for (size_t j = 0; j < n; j++)
                cr[j] += aip * br[j];
        }
        rowsum[i] = rs;
    }
}

static int dgemm_full_check(const hq_shape *s, void *const *bufs, double *ratio, char *msg,
                            size_t len)
{
    size_t m = (size_t)s->d[0], n = (size_t)s->d[1], k = (size_t)s->d[2];
    const double *c = bufs[BUF_C];
    *ratio = NAN;
    long bad = first_nonfinite(c, m * n);
    if (bad >= 0) {
        nonfinite_msg(c, bad, n, msg, len);
        return -1;
    }
    double *cref = malloc(m * n * sizeof(double)), *rowsum = malloc(m * sizeof(double));
    double *colmax = malloc(n * sizeof(double));
    if (!cref || !rowsum || !colmax) {
        free(cref), free(rowsum), free(colmax);
        snprintf(msg, len, "judge out of memory in the full check");
        return -2;
    }
    reference(bufs[BUF_A], bufs[BUF_B], m, n, k, cref, rowsum, colmax);
    double worst = 0, bound = 2.0 * (double)k / (1.0 - (double)k * U_ROUND);
    size_t wi = 0;
    int nonfinite = 0;
    for (size_t i = 0; i < m * n && !nonfinite; i++) {
        double gauge = rowsum[i / n] * colmax[i % n];
        double q = fabs(c[i] - cref[i]) / (U_ROUND * gauge + TINY);
        if (!isfinite(q))
            nonfinite = 1, wi = i; /* C finite but far too large: the ratio overflows */
        else if (q > worst)
            worst = q, wi = i;
    }
    *ratio = nonfinite ? NAN : worst;
    int rc = 0;
    if (nonfinite || !(worst <= bound)) {
        snprintf(msg, len, "C[%zu,%zu] = %.17g but reference %.17g (ratio %.3g > bound %.0f)",
                 wi / n, wi % n, c[wi], cref[wi], worst, bound);
        rc = -1;
    }
    free(cref), free(rowsum), free(colmax);
    return rc;
}

const hq_judge_family hq_family_judge = {
    .name = "dgemm",
    .nbufs = 3,
    .buf_names = {"A", "B", "C"},
    .buf_is_output = {0, 0, 1},
    .parse_shape = dgemm_parse_shape,
    .format_shape = dgemm_format_shape,
    .buf_bytes = dgemm_buf_bytes,
    .flops = dgemm_flops,
    .full_check_work = dgemm_work,
    .fill_inputs = dgemm_fill,
    .fast_check = dgemm_fast_check,
    .full_check = dgemm_full_check,
};
