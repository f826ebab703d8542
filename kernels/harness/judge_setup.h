/* judge_setup.h: the judge's state, option parsing, shared buffers and JSON output.
 * Included by judge.c only (static functions), so the judge still builds from
 * judge.c + <family>_judge.c. The protocol logic lives in judge.c. */
#ifndef HPCQ_JUDGE_SETUP_H
#define HPCQ_JUDGE_SETUP_H

#ifndef _GNU_SOURCE
#error "define _GNU_SOURCE before any include (memfd_create, CPU_SET, pipe2)"
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "problem.h"

#define MAX_CHECKS 16
#define MAX_KEEP 64 /* calls kept for the full comparison after the run */

/* A benchmark call kept for the full comparison: the judge's own copies of its inputs and
 * the snapshot of its outputs. */
typedef struct {
    void *bufs[HQ_MAX_BUFS];
    long index; /* 1-based among benchmark calls, warm-ups first */
    char what[128];
} kept_call;

typedef struct {
    double *v;
    size_t n, cap;
} dvec;

typedef struct {
    hq_shape dims, checks[MAX_CHECKS];
    int nchecks;
    double full_max_work;
    cpu_set_t cores;
    int have_cores, judge_core;
    long warmup_calls, min_calls, max_calls;
    double warmup_min_s, min_time_s, call_timeout_s, total_timeout_s, startup_timeout_s;
    long full_keep;        /* benchmark calls kept (reservoir) and compared in full after the run */
    double gap_cpu_abs_s;  /* runner CPU allowed between DONE and the next GO: absolute ... */
    double gap_cpu_frac;   /* ... plus this fraction of the call just finished */
    uint64_t seed;
    int have_seed;
    const char *output_file;
    char **cmd; /* sandbox prefix + runner + cand.so + entry */
    int ncmd;
} options;

typedef struct {
    const char *status; /* NULL until something fails; "ok" at the end otherwise */
    char message[1024];
    dvec times, warm, check;
    dvec full_calls; /* 1-based indices of benchmark calls (warm-ups first) fully compared */
    double freivalds_max, full_max, cpu_s, wall_s; /* NAN prints as null */
    double gap_cpu_max_s;  /* most runner CPU seen between a DONE and the next GO */
    double gap_cpu_forgiven_s; /* the largest gap over the allowance forgiven (0: none) */
    int exit_code, signal; /* -1 prints as null */
    int full_checks, seccomp_filters;
    int gap_excess_calls; /* calls followed by a gap over the allowance (forgiven or not) */
} result;

typedef struct {
    options o;
    result r;
    const hq_judge_family *fam;
    size_t cap[HQ_MAX_BUFS];  /* bytes, page-rounded, for the largest shape */
    void *shared[HQ_MAX_BUFS]; /* memfd mappings, also mapped by the child */
    void *priv[HQ_MAX_BUFS];   /* inputs: the truth; outputs: snapshot after a call */
    int memfd[HQ_MAX_BUFS], passfd[HQ_MAX_BUFS];
    int go_r, go_w, done_r, done_w, out_w, out_r, devnull, pidfd, reaped;
    pid_t pid, runner;    /* runner: the sandboxed runner process, found after LOAD */
    clockid_t runner_clock;
    int have_runner_clock, own_filters;
    double cpu_at_done;   /* runner CPU time when the last DONE (or READY) arrived */
    double last_call_s;   /* duration of the last call, scales the gap allowance */
    kept_call keep[MAX_KEEP];
    int nkeep;
    long offered;         /* benchmark calls offered to the reservoir so far */
    double t_start, t_spawn, deadline, iter_s;
    uint64_t seed_state;
    char last_call[128];
} judge;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* First failure wins: later errors are consequences (e.g. the kill after a timeout). */
__attribute__((format(printf, 3, 4))) static void fail(judge *J, const char *status,
                                                       const char *fmt, ...)
{
    if (J->r.status)
        return;
    J->r.status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(J->r.message, sizeof J->r.message, fmt, ap);
    va_end(ap);
}

static int dvec_push(dvec *d, double x)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 64;
        double *v = realloc(d->v, cap * sizeof *v);
        if (!v)
            return -1;
        d->v = v, d->cap = cap;
    }
    d->v[d->n++] = x;
    return 0;
}

/* bwrap reports a command killed by signal s as exit code 128+s. */
static void set_exit_fields(judge *J, int st)
{
    J->r.exit_code = J->r.signal = -1;
    if (WIFSIGNALED(st))
        J->r.signal = WTERMSIG(st);
    if (WIFEXITED(st)) {
        J->r.exit_code = WEXITSTATUS(st);
        if (J->r.exit_code > 128 && J->r.exit_code <= 128 + 64)
            J->r.signal = J->r.exit_code - 128;
    }
}

/* Start of the sandbox's output (bwrap and runner errors come first), one safe line. */
static void output_head(judge *J, char *out, size_t len)
{
    ssize_t n = J->out_r >= 0 ? pread(J->out_r, out, len - 1, 0) : -1;
    if (n <= 0) {
        snprintf(out, len, "(no output)");
        return;
    }
    out[n] = 0;
    for (ssize_t i = 0; i < n; i++)
        if (out[i] == '\n' || out[i] == '\t')
            out[i] = ' ';
        else if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] >= 0x7f)
            out[i] = '?';
    while (n > 0 && out[n - 1] == ' ')
        out[--n] = 0;
}

/* 1-based index of the next benchmark call (warm-ups first), as the verdict lists them. */
static long call_index(const judge *J) { return (long)(J->r.warm.n + J->r.times.n + 1); }

static uint64_t fresh_random(void)
{
    uint64_t x;
    if (getrandom(&x, sizeof x, 0) == (ssize_t)sizeof x)
        return x;
    /* getrandom cannot fail on Linux >= 3.17 once seeded; keep going regardless */
    return (uint64_t)(now_s() * 1e9) ^ ((uint64_t)getpid() << 32);
}

/* Inputs are reseeded every call; with --seed the sequence is reproducible. */
static uint64_t input_seed(judge *J)
{
    return J->o.have_seed ? hq_splitmix64(&J->seed_state) : fresh_random();
}

/* ---------------------------------------------------------------- options */

static void usage(void)
{
    fprintf(stderr,
            "usage: judge-FAMILY [options] -- SANDBOX_PREFIX... RUNNER CAND.so ENTRY\n"
            "  --dims M,N,K                benchmark shape (256,256,256)\n"
            "  --check-shapes 'S;S'        fully checked shapes run first (17,19,23;64,64,64)\n"
            "  --full-check-max-work W     full check of the first warm-up if M*N*K <= W (2^27)\n"
            "  --cores LIST                child CPU affinity, e.g. 0,1 or 2-3 (inherit)\n"
            "  --judge-core C              pin the judge itself (no pinning)\n"
            "  --warmup-calls N (3)  --warmup-min-s S (0.2)\n"
            "  --min-calls N (10)  --min-time-s S (1.0)  --max-calls N (1000)\n"
            "  --call-timeout-s S (10)  --total-timeout-s S (120)  --startup-timeout-s S (10)\n"
            "  --full-check-keep N         benchmark calls chosen at random after each call\n"
            "                              (reservoir sampling) and compared in full after\n"
            "                              the run (8)\n"
            "  --gap-cpu-abs-s S --gap-cpu-frac F   runner CPU allowed between DONE and the\n"
            "                              next GO: S + F x the call's time (0.002, 0.05)\n"
            "  --seed U64                  reproducible inputs (default: getrandom per call)\n"
            "  --output-file PATH          candidate stdout+stderr (/dev/null)\n");
}

static int parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

static int parse_count(const char *s, long lo, long *out)
{
    double v;
    if (parse_num(s, (double)lo, 1e9, &v) || v != floor(v))
        return -1;
    *out = (long)v;
    return 0;
}

static int parse_cores(const char *s, cpu_set_t *set)
{
    CPU_ZERO(set);
    for (const char *p = s; *p;) {
        char *end;
        long a = strtol(p, &end, 10), b = a;
        if (end == p || a < 0)
            return -1;
        if (*end == '-' && (p = end + 1, b = strtol(p, &end, 10), end == p || b < a))
            return -1;
        if (b >= CPU_SETSIZE)
            return -1;
        for (long c = a; c <= b; c++)
            CPU_SET((int)c, set);
        if (*end && *end != ',')
            return -1;
        p = *end ? end + 1 : end;
    }
    return CPU_COUNT(set) > 0 ? 0 : -1;
}

static int parse_shapes(const hq_judge_family *F, const char *s, hq_shape *out, int *n)
{
    char buf[1024], *save = NULL;
    if (snprintf(buf, sizeof buf, "%s", s) >= (int)sizeof buf)
        return -1;
    *n = 0;
    for (char *t = strtok_r(buf, ";", &save); t; t = strtok_r(NULL, ";", &save)) {
        if (*n == MAX_CHECKS || F->parse_shape(t, &out[*n]) != 0)
            return -1;
        (*n)++;
    }
    return 0;
}

static int parse_one(options *o, const hq_judge_family *F, int opt, const char *v)
{
    double d;
    switch (opt) {
    case 'd': return F->parse_shape(v, &o->dims);
    case 'c': return parse_shapes(F, v, o->checks, &o->nchecks);
    case 'w': return parse_num(v, 0, 1e18, &o->full_max_work);
    case 'C': o->have_cores = 1; return parse_cores(v, &o->cores);
    case 'j': return parse_num(v, 0, CPU_SETSIZE - 1, &d) ? -1 : (o->judge_core = (int)d, 0);
    case 'W': return parse_count(v, 0, &o->warmup_calls);
    case 'S': return parse_num(v, 0, 1e6, &o->warmup_min_s);
    case 'n': return parse_count(v, 1, &o->min_calls);
    case 't': return parse_num(v, 0, 1e6, &o->min_time_s);
    case 'x': return parse_count(v, 1, &o->max_calls);
    case 'T': return parse_num(v, 1e-3, 1e6, &o->call_timeout_s);
    case 'A': return parse_num(v, 1e-3, 1e6, &o->total_timeout_s);
    case 'U': return parse_num(v, 1e-3, 1e6, &o->startup_timeout_s);
    case 'o': o->output_file = v; return 0;
    case 'R': return parse_count(v, 0, &o->full_keep) || o->full_keep > MAX_KEEP ? -1 : 0;
    case 'g': return parse_num(v, 0, 1e3, &o->gap_cpu_abs_s);
    case 'G': return parse_num(v, 0, 1e3, &o->gap_cpu_frac);
    case 's': {
        char *end;
        errno = 0;
        o->seed = strtoull(v, &end, 0);
        o->have_seed = 1;
        return errno || end == v || *end ? -1 : 0;
    }
    }
    return -1;
}

static int parse_options(options *o, const hq_judge_family *F, int argc, char **argv)
{
    static const struct option longs[] = {
        {"dims", 1, 0, 'd'}, {"check-shapes", 1, 0, 'c'}, {"full-check-max-work", 1, 0, 'w'},
        {"cores", 1, 0, 'C'}, {"judge-core", 1, 0, 'j'}, {"warmup-calls", 1, 0, 'W'},
        {"warmup-min-s", 1, 0, 'S'}, {"min-calls", 1, 0, 'n'}, {"min-time-s", 1, 0, 't'},
        {"max-calls", 1, 0, 'x'}, {"call-timeout-s", 1, 0, 'T'},
        {"total-timeout-s", 1, 0, 'A'}, {"startup-timeout-s", 1, 0, 'U'},
        {"seed", 1, 0, 's'}, {"output-file", 1, 0, 'o'}, {"full-check-keep", 1, 0, 'R'},
        {"gap-cpu-abs-s", 1, 0, 'g'}, {"gap-cpu-frac", 1, 0, 'G'}, {"help", 0, 0, 'h'},
        {0, 0, 0, 0}};
    *o = (options){.full_max_work = (double)(1 << 27), .judge_core = -1, .warmup_calls = 3,
                   .min_calls = 10, .max_calls = 1000, .warmup_min_s = 0.2, .min_time_s = 1.0,
                   .call_timeout_s = 10, .total_timeout_s = 120, .startup_timeout_s = 10,
                   .full_keep = 8, .gap_cpu_abs_s = 0.002, .gap_cpu_frac = 0.05};
    if (F->parse_shape("256,256,256", &o->dims) != 0 ||
        parse_shapes(F, "17,19,23;64,64,64", o->checks, &o->nchecks) != 0)
        o->nchecks = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "+", longs, NULL)) != -1) {
        if (opt == 'h' || opt == '?' || parse_one(o, F, opt, optarg) != 0) {
            if (opt != 'h' && opt != '?')
                fprintf(stderr, "judge: bad value for an option: %s\n", optarg);
            usage();
            return -1;
        }
    }
    o->cmd = argv + optind, o->ncmd = argc - optind;
    const char *err = o->ncmd < 1 ? "missing command after --"
                      : o->max_calls < o->min_calls ? "--max-calls below --min-calls"
                                                    : NULL;
    if (err) {
        fprintf(stderr, "judge: %s\n", err);
        usage();
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- buffers */

static size_t max_bytes(judge *J, int buf)
{
    size_t m = J->fam->buf_bytes(&J->o.dims, buf), page = (size_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < J->o.nchecks; i++) {
        size_t b = J->fam->buf_bytes(&J->o.checks[i], buf);
        m = b > m ? b : m;
    }
    return (m + page - 1) / page * page;
}

/* Shared memfd per buffer. Seals stop the child from shrinking it (which would SIGBUS
 * the judge) and, for inputs, from ever obtaining a writable mapping; the child gets a
 * read-only reopen of each input. */
static int make_buffer(judge *J, int i)
{
    int out = J->fam->buf_is_output[i];
    char name[32], path[64];
    snprintf(name, sizeof name, "hpcq-%s", J->fam->buf_names[i]);
    J->cap[i] = max_bytes(J, i);
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0 || ftruncate(fd, (off_t)J->cap[i]) != 0)
        return -1;
    J->memfd[i] = fd;
    J->shared[i] = mmap(NULL, J->cap[i], PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (J->shared[i] == MAP_FAILED)
        return -1;
    int seals = F_SEAL_SHRINK | F_SEAL_GROW | (out ? 0 : F_SEAL_FUTURE_WRITE) | F_SEAL_SEAL;
    if (fcntl(fd, F_ADD_SEALS, seals) != 0)
        return -1;
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    J->passfd[i] = out ? fd : open(path, O_RDONLY | O_CLOEXEC);
    J->priv[i] = aligned_alloc(64, J->cap[i]);
    return J->passfd[i] >= 0 && J->priv[i] ? 0 : -1;
}

static int setup_judge(judge *J)
{
    cpu_set_t one;
    if (J->o.judge_core >= 0) {
        CPU_ZERO(&one);
        CPU_SET(J->o.judge_core, &one);
        if (sched_setaffinity(0, sizeof one, &one) != 0)
            return fail(J, "infra_error", "cannot pin the judge: %s", strerror(errno)), -1;
    }
    const char *of = J->o.output_file ? J->o.output_file : "/dev/null";
    J->devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    J->out_w = open(of, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    J->out_r = J->o.output_file ? open(of, O_RDONLY | O_CLOEXEC) : -1;
    if (J->devnull < 0 || J->out_w < 0)
        return fail(J, "infra_error", "cannot open %s: %s", of, strerror(errno)), -1;
    for (int i = 0; i < J->fam->nbufs; i++)
        if (make_buffer(J, i) != 0)
            return fail(J, "infra_error", "cannot create buffer %s: %s", J->fam->buf_names[i],
                        strerror(errno)), -1;
    return 0;
}

/* Defaults that must hold even if option parsing or setup fails early. */
static void judge_init(judge *J, const hq_judge_family *F)
{
    memset(J, 0, sizeof *J);
    J->fam = F;
    J->r.freivalds_max = J->r.full_max = J->r.cpu_s = J->r.wall_s = NAN;
    J->r.gap_cpu_max_s = 0;
    J->r.exit_code = J->r.signal = J->r.seccomp_filters = -1;
    J->own_filters = -1;
    J->go_r = J->go_w = J->done_r = J->done_w = J->out_w = J->out_r = J->devnull = -1;
    J->pidfd = -1;
    for (int i = 0; i < HQ_MAX_BUFS; i++)
        J->memfd[i] = J->passfd[i] = -1;
    /* keep 0-2 occupied so no pipe or memfd of ours lands on a stdio number */
    int fd;
    while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= 2)
        ;
    if (fd > 2)
        close(fd);
}

/* ---------------------------------------------------------------- JSON */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f)
            fputc('?', f);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void json_num(FILE *f, double x)
{
    if (isfinite(x))
        fprintf(f, "%.9g", x);
    else
        fputs("null", f);
}

static void json_vec(FILE *f, const char *key, const dvec *d)
{
    fprintf(f, ", \"%s\": [", key);
    for (size_t i = 0; i < d->n; i++) {
        fputs(i ? ", " : "", f);
        json_num(f, d->v[i]);
    }
    fputc(']', f);
}

static void json_int(FILE *f, const char *key, int v)
{
    fprintf(f, ", \"%s\": ", key);
    if (v >= 0)
        fprintf(f, "%d", v);
    else
        fputs("null", f);
}

static void print_json(judge *J)
{
    FILE *f = stdout;
    result *r = &J->r;
    fputs("{\"status\": ", f);
    json_str(f, r->status);
    fputs(", \"message\": ", f);
    json_str(f, r->message);
    json_vec(f, "times_s", &r->times);
    json_vec(f, "warmup_s", &r->warm);
    json_vec(f, "check_s", &r->check);
    json_vec(f, "full_check_calls", &r->full_calls);
    fputs(", \"flops_per_call\": ", f);
    json_num(f, J->fam->flops(&J->o.dims));
    fputs(", \"cpu_s\": ", f);
    json_num(f, r->cpu_s);
    fputs(", \"wall_s\": ", f);
    json_num(f, r->wall_s);
    json_int(f, "exit_code", r->exit_code);
    json_int(f, "signal", r->signal);
    fputs(", \"freivalds_max_ratio\": ", f);
    json_num(f, r->freivalds_max);
    fputs(", \"full_max_ratio\": ", f);
    json_num(f, r->full_max);
    fputs(", \"gap_cpu_max_s\": ", f);
    json_num(f, r->gap_cpu_max_s);
    fputs(", \"gap_cpu_forgiven_s\": ", f);
    json_num(f, r->gap_cpu_forgiven_s);
    json_int(f, "gap_excess_calls", r->gap_excess_calls);
    json_int(f, "full_checks", r->full_checks);
    json_int(f, "seccomp_filters", r->seccomp_filters);
    fputs("}\n", f);
    fflush(f);
}

#endif
