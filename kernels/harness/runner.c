/* runner.c: the trusted program inside the sandbox (unprivileged uid, bwrap namespaces).
 *
 *   runner CAND.so ENTRY hq1 GO_FD DONE_FD NBUF FD:BYTES:r|w ...
 *
 * The judge appends everything from "hq1" on. Order of events:
 *   map the shared buffers (inputs from read-only fds, so they cannot be remapped
 *   writable), close their fds, set no_new_privs, install seccomp layer 1 and layer 2
 *   (the last filter), send LOAD, dlopen + dlsym the candidate, send READY, then serve
 *   GO -> call -> DONE until EXIT. Every library a candidate may need (libgomp, libm,
 *   libgcc_s) is linked into the runner, so the loader maps it, and libgomp's own
 *   constructor runs, before main: the candidate's dlopen finds them already there.
 * Every byte of candidate code (constructors included) runs after layer 2, which forbids
 * seccomp() itself: the candidate can neither remove nor fake a filter, and the judge
 * counts the filters from outside. The candidate shares this address space, so nothing
 * here is trusted by the judge beyond the timing of DONE.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "problem.h"
#include "seccomp_filter.h"

typedef struct {
    int go_fd, done_fd, nbufs;
    int fd[HQ_MAX_BUFS];
    size_t bytes[HQ_MAX_BUFS];
    int writable[HQ_MAX_BUFS];
    void *ptr[HQ_MAX_BUFS];
} runner_args;

static void die(int code, const char *what)
{
    /* stderr is the evaluation's output file; the judge quotes it only for failures
     * before LOAD, when nothing of the candidate has run yet */
    fprintf(stderr, "runner: %s%s%s\n", what, errno ? ": " : "", errno ? strerror(errno) : "");
    _exit(code);
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_buf(const char *s, runner_args *a, int i)
{
    long fd;
    unsigned long long bytes;
    char mode, tail;
    if (sscanf(s, "%ld:%llu:%c%c", &fd, &bytes, &mode, &tail) != 3 || fd < 0 || bytes == 0)
        return -1;
    if (mode != 'r' && mode != 'w')
        return -1;
    a->fd[i] = (int)fd, a->bytes[i] = (size_t)bytes, a->writable[i] = (mode == 'w');
    return 0;
}

static void parse_args(int argc, char **argv, runner_args *a)
{
    long v[3];
    errno = 0;
    if (argc < 7 || strcmp(argv[3], HQ_PROTOCOL) != 0)
        die(HQ_RUNNER_USAGE, "usage: runner CAND.so ENTRY " HQ_PROTOCOL
                             " GO_FD DONE_FD NBUF FD:BYTES:r|w...");
    if (parse_int(argv[4], 0, 1 << 20, &v[0]) || parse_int(argv[5], 0, 1 << 20, &v[1]) ||
        parse_int(argv[6], 1, HQ_MAX_BUFS, &v[2]) || argc != 7 + v[2])
        die(HQ_RUNNER_USAGE, "bad protocol arguments");
    a->go_fd = (int)v[0], a->done_fd = (int)v[1], a->nbufs = (int)v[2];
    if (a->nbufs != hq_family_runner.nbufs)
        die(HQ_RUNNER_USAGE, "buffer count does not match the problem family");
    for (int i = 0; i < a->nbufs; i++)
        if (parse_buf(argv[7 + i], a, i))
            die(HQ_RUNNER_USAGE, "bad buffer argument");
}

/* Each buffer sits between two PROT_NONE guard pages, so running off either end faults
 * instead of silently touching another buffer. The fd is closed afterwards: a reopen of
 * /proc/self/fd/N could otherwise yield a writable description of an input. */
static void map_buffers(runner_args *a)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < a->nbufs; i++) {
        size_t len = (a->bytes[i] + page - 1) / page * page;
        char *base = mmap(NULL, len + 2 * page, PROT_NONE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (base == MAP_FAILED)
            die(HQ_RUNNER_SETUP, "cannot reserve buffer space");
        int prot = a->writable[i] ? PROT_READ | PROT_WRITE : PROT_READ;
        void *p = mmap(base + page, len, prot, MAP_SHARED | MAP_FIXED, a->fd[i], 0);
        if (p == MAP_FAILED)
            die(HQ_RUNNER_SETUP, "cannot map a shared buffer");
        a->ptr[i] = p;
        close(a->fd[i]);
    }
}

static void send_tag(int fd, uint32_t tag)
{
    hq_status_msg m = {HQ_MAGIC, tag};
    ssize_t w;
    do
        w = write(fd, &m, sizeof m);
    while (w < 0 && errno == EINTR);
    if (w != (ssize_t)sizeof m)
        _exit(0); /* judge gone: nothing left to do */
}

/* Returns 1 for GO (shape filled in), 0 for EXIT or a closed pipe. */
static int recv_go(int fd, hq_shape *shape)
{
    hq_go_msg m;
    size_t got = 0;
    while (got < sizeof m) {
        ssize_t r = read(fd, (char *)&m + got, sizeof m - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        got += (size_t)r;
    }
    if (m.magic != HQ_MAGIC || m.tag != HQ_GO)
        return 0;
    *shape = m.shape;
    return 1;
}

/* Reading our own CPU clock makes the kernel book this thread's runtime up to now;
 * otherwise the part since the last tick (up to 1/HZ) would be booked when we block,
 * after the judge read our CPU time at READY or DONE, and look like work between calls. */
static void book_cpu_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
}

int main(int argc, char **argv)
{
    runner_args a;
    memset(&a, 0, sizeof a);
    parse_args(argc, argv, &a);
    map_buffers(&a);
    errno = 0;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || hq_seccomp_layer1(getpid()) != 0)
        die(HQ_RUNNER_SETUP, "cannot install seccomp layer 1");
    fflush(NULL);
    errno = 0;
    if (hq_seccomp_layer2(getpid()) != 0)
        die(HQ_RUNNER_SETUP, "cannot install seccomp layer 2");
    /* From here on any failure may be the candidate's doing (constructors, bad .so). The
     * messages below go to the output file; the judge never quotes it after LOAD. */
    send_tag(a.done_fd, HQ_LOAD);
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "runner: cannot load candidate: %s\n", dlerror());
        _exit(HQ_RUNNER_LOADFAIL);
    }
    void *entry = dlsym(lib, argv[2]);
    if (!entry) {
        fprintf(stderr, "runner: candidate has no entry '%s'\n", argv[2]);
        _exit(HQ_RUNNER_LOADFAIL);
    }
    book_cpu_time();
    send_tag(a.done_fd, HQ_READY);
    hq_shape shape;
    while (recv_go(a.go_fd, &shape)) {
        hq_family_runner.call(entry, &shape, a.ptr);
        book_cpu_time();
        send_tag(a.done_fd, HQ_DONE);
    }
    /* _exit: skip the candidate's destructors, the judge has what it needs */
    _exit(0);
}
