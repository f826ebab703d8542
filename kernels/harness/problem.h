/* problem.h: the contract between the generic harness (judge.c, runner.c) and a
 * problem family (DGEMM today; SGEMM, stencils, SpMV later).
 *
 * A family is two small files:
 *   <family>_judge.c  defines `hq_family_judge`  (trusted parent: shapes, buffers,
 *                     inputs, verification), linked into judge-<family>;
 *   <family>_call.c   defines `hq_family_runner` (sandboxed child: how to call the
 *                     candidate entry), linked into runner-<family>.
 * Buffers are opaque byte arrays to the harness: it creates, shares, poisons and
 * compares them; only the family knows their element type and meaning.
 *
 * This header also holds the wire protocol between judge and runner and the PRNG,
 * because both sides (or every family) need exactly the same definitions.
 */
#ifndef HPCQ_PROBLEM_H
#define HPCQ_PROBLEM_H

#include <stddef.h>
#include <stdint.h>

#define HQ_MAX_DIMS 4 /* a shape is up to 4 integers, meaning defined by the family */
#define HQ_MAX_BUFS 6 /* buffers per call (inputs + outputs) */

typedef struct {
    int64_t d[HQ_MAX_DIMS];
} hq_shape;

/* ---- wire protocol (fixed-size records, each <= PIPE_BUF so writes are atomic) ----
 * runner -> judge: LOAD (trusted setup done, about to dlopen the candidate),
 *                  READY (candidate loaded, layer-2 filter on), DONE (after each call).
 * judge -> runner: GO (with the shape of this call), EXIT.
 * The judge believes nothing from the child except the arrival of DONE. */
#define HQ_PROTOCOL "hq1"
#define HQ_MAGIC 0x71637068u /* "hpcq" */
enum hq_tag { HQ_LOAD = 1, HQ_READY = 2, HQ_DONE = 3, HQ_GO = 4, HQ_EXIT = 5 };

typedef struct {
    uint32_t magic, tag;
} hq_status_msg;

typedef struct {
    uint32_t magic, tag;
    hq_shape shape;
} hq_go_msg;

/* Runner exit codes that mean "the trusted setup failed" (never the candidate's fault
 * when they occur before LOAD). */
enum { HQ_RUNNER_USAGE = 2, HQ_RUNNER_LOADFAIL = 3, HQ_RUNNER_SETUP = 4 };

/* ---- PRNG: xoshiro256** (Blackman & Vigna), seeded through splitmix64 ----
 * Fast enough to regenerate O(n^2) inputs on every call. Not cryptographic: the judge
 * reseeds it from getrandom() for every call, so seeing one call's inputs says nothing
 * about the next call's. */
typedef struct {
    uint64_t s[4];
} hq_rng;

static inline uint64_t hq_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline void hq_rng_seed(hq_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = hq_splitmix64(&seed);
}

static inline uint64_t hq_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t hq_rng_next(hq_rng *r)
{
    uint64_t *s = r->s, out = hq_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = hq_rotl(s[3], 45);
    return out;
}

/* Uniform in [-1, 1): 53 random bits scaled, so every value is exact in double. */
static inline double hq_rng_sym(hq_rng *r)
{
    return (double)(hq_rng_next(r) >> 11) * 0x1.0p-52 - 1.0;
}

/* ---- judge side ---- */
typedef struct {
    const char *name; /* family name, e.g. "dgemm" */
    int nbufs;
    const char *buf_names[HQ_MAX_BUFS];
    int buf_is_output[HQ_MAX_BUFS]; /* 1: written by the candidate, poisoned before calls */

    /* "M,N,K" -> shape; returns 0 on success. */
    int (*parse_shape)(const char *text, hq_shape *out);
    void (*format_shape)(const hq_shape *s, char *out, size_t len);
    size_t (*buf_bytes)(const hq_shape *s, int buf);
    double (*flops)(const hq_shape *s);
    /* Cost of full_check, compared with --full-check-max-work (for DGEMM: M*N*K). */
    double (*full_check_work)(const hq_shape *s);

    /* Write fresh inputs into the input buffers (outputs are left alone). */
    void (*fill_inputs)(const hq_shape *s, void *const *bufs, hq_rng *rng);

    /* Both checks read the judge's PRIVATE input copies and a snapshot of the outputs.
     * They return 0 when the result is accepted, -1 when rejected (reason in msg), -2
     * when the judge itself failed (e.g. out of memory; reported as infra_error).
     * *ratio gets the observed error in the family's units (reported in the JSON).
     * fast_check runs on every call (O(n^2)); `probe` is seeded after the call. */
    int (*fast_check)(const hq_shape *s, void *const *bufs, hq_rng *probe, double *ratio,
                      char *msg, size_t len);
    int (*full_check)(const hq_shape *s, void *const *bufs, double *ratio, char *msg,
                      size_t len);
} hq_judge_family;

extern const hq_judge_family hq_family_judge;

/* ---- runner side ---- */
typedef struct {
    const char *name;
    int nbufs;
    /* Call the candidate entry (from dlsym) once on this shape. */
    void (*call)(void *entry, const hq_shape *s, void *const *bufs);
} hq_runner_family;

extern const hq_runner_family hq_family_runner;

#endif
