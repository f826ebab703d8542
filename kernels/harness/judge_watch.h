/* judge_watch.h: the judge's view of the sandboxed runner from outside, through /proc
 * and the kernel's CPU clocks: nothing here is told by the runner, so nothing the
 * candidate does in the runner's address space can fake it. Included by judge.c after
 * its child-lifetime helpers (kill_sandbox), like judge_setup.h: static functions.
 *
 * - find_runner / attach_runner: the runner's pid (the leaf below bwrap) and CPU clock.
 * - check_seccomp: once READY, exactly the judge's own filters + the runner's 2 layers.
 * - threads_asleep: between calls no runner thread is running.
 * - freeze_runner / thaw_runner: the runner stopped while the next inputs are copied.
 * - gap_ok: runner CPU between DONE and the next GO stays within its allowance. The
 *   kernel books a running thread's CPU at ticks and context switches only, so readings
 *   from outside lag by up to 1/HZ per thread; the runner books its own thread before
 *   DONE, and workers get an allowance per thread (the engine's gap_cpu_* settings).
 */
#ifndef HPCQ_JUDGE_WATCH_H
#define HPCQ_JUDGE_WATCH_H

#include <dirent.h>

/* Integer after "key:" in /proc/<pid>/status (pid 0: ourselves), or -1. */
static long proc_status_field(pid_t pid, const char *key)
{
    char path[64], line[256];
    if (pid > 0)
        snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    else
        snprintf(path, sizeof path, "/proc/self/status");
    FILE *f = fopen(path, "re");
    long v = -1;
    size_t klen = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            v = strtol(line + klen + 1, NULL, 10);
            break;
        }
    if (f)
        fclose(f);
    return v;
}

/* The sandboxed runner: the leaf below bwrap (its direct child with --as-pid-1, or the
 * child of bwrap's init without it). Each level must have exactly one child. */
static pid_t find_runner(pid_t top)
{
    pid_t p = top;
    for (int depth = 0; depth < 4; depth++) {
        pid_t kids[2];
        int n = children_of(p, kids, 2);
        if (n == 0)
            return depth > 0 ? p : -1;
        if (n > 1)
            return -1;
        p = kids[0];
    }
    return -1;
}

/* Runner CPU time (all its threads, exited ones included), or NAN once it is gone. */
static double runner_cpu_s(judge *J)
{
    struct timespec ts;
    if (!J->have_runner_clock || clock_gettime(J->runner_clock, &ts) != 0)
        return NAN;
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* 0 when the runner and its CPU clock are found; -1 otherwise (it may already be dead:
 * the caller waits for that before calling it the node's failure). */
static int attach_runner(judge *J)
{
    J->runner = find_runner(J->pid);
    if (J->runner <= 0)
        return -1;
    J->have_runner_clock = clock_getcpuclockid(J->runner, &J->runner_clock) == 0;
    return J->have_runner_clock ? 0 : -1;
}

/* Once READY: the runner must carry exactly the judge's own filters plus its two layers,
 * in filter mode, with no_new_privs. Read by the kernel for us, outside the sandbox, so
 * nothing the candidate does in its address space can fake it. 0: as it must be; -1: a
 * violation (failed here); -2: /proc could not be read (the runner may be dead). */
static int check_seccomp(judge *J)
{
    long mode = proc_status_field(J->runner, "Seccomp");
    long nnp = proc_status_field(J->runner, "NoNewPrivs");
    long count = proc_status_field(J->runner, "Seccomp_filters"); /* Linux >= 5.9 */
    J->r.seccomp_filters = (int)count;
    if (mode < 0)
        return -2; /* unreadable: the caller tells a dead runner from a broken node */
    if (mode != 2 || nnp != 1)
        return fail(J, "violation", "the runner's seccomp filters are not in force (mode %ld)",
                    mode), -1;
    if (count >= 0 && J->own_filters >= 0 && count != J->own_filters + 2)
        return fail(J, "violation",
                    "the runner carries %ld seccomp filters where exactly %d belong: a filter "
                    "was added or one of the sandbox's was faked",
                    count, J->own_filters + 2), -1;
    return 0;
}

/* Runtime of one runner thread in ns (/proc/<pid>/task/<tid>/schedstat), or -1. */
static long long thread_runtime_ns(pid_t pid, long tid)
{
    char path[96];
    snprintf(path, sizeof path, "/proc/%d/task/%ld/schedstat", (int)pid, tid);
    FILE *f = fopen(path, "re");
    long long ns = -1;
    if (f && fscanf(f, "%lld", &ns) != 1)
        ns = -1;
    if (f)
        fclose(f);
    return ns;
}

/* Up to `max` threads of `pid` with their scheduler state (R, S, D, T, t, Z, ...) from
 * /proc/<pid>/task/<tid>/stat; the count, or -1 when the process is gone. */
static int thread_states(pid_t pid, long *tids, char *states, int max)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < max) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char stat[400], line[512];
        snprintf(stat, sizeof stat, "%s/%s/stat", path, e->d_name);
        FILE *f = fopen(stat, "re");
        if (!f)
            continue; /* exited meanwhile */
        size_t got = fread(line, 1, sizeof line - 1, f);
        fclose(f);
        line[got] = 0;
        const char *close = strrchr(line, ')'); /* the state follows "(comm) " */
        tids[n] = strtol(e->d_name, NULL, 10);
        states[n++] = close && close[1] == ' ' ? close[2] : '?';
    }
    closedir(d);
    return n;
}

/* Between calls every runner thread must be asleep (the runner in read(), OpenMP workers
 * in futex waits). A thread seen running is watched for 20 ms: one that burns CPU all
 * along polls or computes between calls, a violation; one merely preempted on its way to
 * sleep, or booking its last slice, is not. Checked before the next call's clock starts. */
static int threads_asleep(judge *J)
{
    long all[64], tids[64];
    char states[64];
    int threads = thread_states(J->runner, all, states, 64), n = 0;
    for (int i = 0; i < threads; i++)
        if (states[i] == 'R')
            tids[n++] = all[i];
    if (n == 0)
        return 1; /* none running, or the runner is gone (the call reports its death) */
    long long before[64];
    for (int i = 0; i < n; i++)
        before[i] = thread_runtime_ns(J->runner, tids[i]);
    nanosleep(&(struct timespec){0, 20000000}, NULL);
    for (int i = 0; i < n; i++) {
        long long after = thread_runtime_ns(J->runner, tids[i]);
        if (before[i] >= 0 && after - before[i] > 10000000) {
            kill_sandbox(J);
            return fail(J, "violation",
                        "a thread of the kernel kept running between calls (%.1f ms of CPU in "
                        "20 ms after %s returned): polling or working outside the timed call",
                        (double)(after - before[i]) * 1e-6, J->last_call), 0;
        }
    }
    return 1;
}

/* 1 when every thread of the runner is stopped (or gone), 0 otherwise. */
static int runner_stopped(pid_t pid)
{
    long tids[64];
    char states[64];
    int n = thread_states(pid, tids, states, 64);
    for (int i = 0; i < n; i++)
        if (states[i] != 'T' && states[i] != 't' && states[i] != 'Z' && states[i] != 'X')
            return 0;
    return 1; /* all stopped, or gone: the call reports the death */
}

/* Freeze the runner (SIGSTOP, which nothing can catch or ignore; sent from outside its pid
 * namespace, it stops even a namespace's pid 1) and wait until every thread is stopped:
 * the next inputs are then published to a process that cannot look at them, and the call's
 * clock starts before it is thawed (thaw_runner). Copying the inputs costs the kernel
 * nothing, and starting early is impossible rather than merely unrewarded. */
static int freeze_runner(judge *J)
{
    if (kill(J->runner, SIGSTOP) != 0)
        return 1; /* gone: the call reports the death */
    double end = now_s() + 1.0;
    while (!runner_stopped(J->runner)) {
        if (now_s() > end) {
            kill_sandbox(J);
            return fail(J, "timeout", "the kernel could not be stopped between calls within 1 s "
                                      "(after %s)", J->last_call), 0;
        }
        nanosleep(&(struct timespec){0, 20000}, NULL);
    }
    return 1;
}

static void thaw_runner(judge *J) { kill(J->runner, SIGCONT); }

/* Runner CPU spent since the last DONE must stay within the gap allowance: after DONE
 * the runner only returns to its read() of the next GO.
 *
 * Some excesses are forgiven, and reported (gap_excess_calls, gap_cpu_forgiven_s): in a
 * virtual machine the host may deschedule the vCPU for milliseconds, and the guest books
 * that time to whatever thread was current, here the runner on its way back to read()
 * (seen in CI: 4.88 ms after an honest 2.2 ms call; 2.62 and 3.77 ms after two calls of
 * one honest run, never reproduced on a quiet host, where gaps are ~0.05 ms). Work outside
 * the timed call cannot help any call (the next inputs are published while the runner
 * is stopped, C was snapshotted at DONE), and every attack of tests/corpus is caught by
 * another check even with a 1 s allowance; this check bounds the habit: work after more
 * than 1 + 1/4 of the gaps (after loading and after each call) is the violation. */
static int gap_ok(judge *J)
{
    double now = runner_cpu_s(J), gap = now - J->cpu_at_done;
    if (!isfinite(gap))
        return 1; /* the runner is gone: the death is reported by the call itself */
    double allowed = J->o.gap_cpu_abs_s + J->o.gap_cpu_frac * J->last_call_s;
    if (gap <= allowed) {
        J->r.gap_cpu_max_s = fmax(J->r.gap_cpu_max_s, gap);
        return 1;
    }
    /* gaps so far, this one included: after loading and after each call */
    long gaps = (long)(J->r.check.n + J->r.warm.n + J->r.times.n) + 1;
    J->r.gap_excess_calls++;
    if (J->r.gap_excess_calls <= 1 + gaps / 4) {
        J->r.gap_cpu_forgiven_s = fmax(J->r.gap_cpu_forgiven_s, gap);
        return 1;
    }
    J->r.gap_cpu_max_s = fmax(J->r.gap_cpu_max_s, gap);
    kill_sandbox(J);
    return fail(J, "violation",
                "the kernel kept running between calls: %.2f ms of CPU after %s returned "
                "(allowed %.2f ms), over the allowance in %d of %ld gaps: work outside "
                "the timed call",
                gap * 1e3, J->last_call, allowed * 1e3, J->r.gap_excess_calls, gaps), 0;
}

#endif
