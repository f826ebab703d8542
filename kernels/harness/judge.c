/* judge.c: the trusted parent of one evaluation. See notes/evaluation.md 2.2 and 4.5.
 *
 *   judge-<family> [options] -- SANDBOX_PREFIX... /sbx/runner /sbx/cand.so ENTRY
 *
 * It owns inputs, timing and verification: fresh random inputs per call, generated in
 * private memory and copied into shared memfds (read-only for the child) while the
 * runner is stopped, the call's clock started before it goes on; outputs poisoned with
 * NaN; GO/DONE over pipes timed with CLOCK_MONOTONIC; after DONE the outputs are
 * snapshotted first, then every call is checked (inputs unchanged, no writes past the
 * output, the family's fast check; its full check on check shapes and the first warm-up
 * at once, and on calls kept at random after they returned, after the run). Between
 * calls no runner thread may run and its CPU clock may not advance (a helper thread,
 * spinning on the next inputs: a violation). Its seccomp filters are counted from
 * outside once it is READY. It prints exactly one JSON line and exits 0; a non-zero exit
 * means a usage error only.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include "judge_setup.h"

/* ---------------------------------------------------------------- spawning */

/* The sandbox runs under another uid, so the kernel's parent-death signal does not
 * survive setpriv: if the judge itself is told to stop, take the sandbox down first
 * (bwrap's init then dies with its parent). Async-signal-safe: kill, signal, raise. */
static volatile pid_t g_child;

static void on_terminate(int sig)
{
    if (g_child > 0) {
        kill(-g_child, SIGKILL);
        kill(g_child, SIGKILL);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Runs in the forked child: own process group (so a timeout kills the whole tree),
 * pinned cores, output file as stdout/stderr, only our fds survive exec. */
static void child_exec(judge *J, char **argv)
{
    setpgid(0, 0);
    signal(SIGPIPE, SIG_DFL); /* ignored dispositions survive exec */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (J->o.have_cores && sched_setaffinity(0, sizeof J->o.cores, &J->o.cores) != 0) {
        dprintf(J->out_w, "judge: sched_setaffinity failed: %s\n", strerror(errno));
        _exit(126);
    }
    if (dup2(J->devnull, 0) < 0 || dup2(J->out_w, 1) < 0 || dup2(J->out_w, 2) < 0)
        _exit(126);
    if (syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */) != 0)
        for (int fd = 3; fd < 65536; fd++)
            fcntl(fd, F_SETFD, FD_CLOEXEC);
    int keep[HQ_MAX_BUFS + 2] = {J->go_r, J->done_w};
    for (int i = 0; i < J->fam->nbufs; i++)
        keep[2 + i] = J->passfd[i];
    for (int i = 0; i < J->fam->nbufs + 2; i++)
        fcntl(keep[i], F_SETFD, 0);
    execvp(argv[0], argv);
    dprintf(2, "judge: cannot exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

/* argv = the given command + "hq1 GO DONE NBUF fd:bytes:r|w ..." */
static char **build_argv(judge *J)
{
    int n = J->o.ncmd, nb = J->fam->nbufs;
    char **argv = calloc((size_t)(n + 5 + nb), sizeof *argv);
    if (!argv)
        return NULL;
    for (int i = 0; i < n; i++)
        argv[i] = J->o.cmd[i];
    if (asprintf(&argv[n], "%s", HQ_PROTOCOL) < 0 || asprintf(&argv[n + 1], "%d", J->go_r) < 0 ||
        asprintf(&argv[n + 2], "%d", J->done_w) < 0 || asprintf(&argv[n + 3], "%d", nb) < 0)
        return NULL;
    for (int i = 0; i < nb; i++)
        if (asprintf(&argv[n + 4 + i], "%d:%zu:%c", J->passfd[i], J->cap[i],
                     J->fam->buf_is_output[i] ? 'w' : 'r') < 0)
            return NULL;
    return argv;
}

static int spawn(judge *J)
{
    int go[2], done[2];
    if (pipe2(go, O_CLOEXEC) || pipe2(done, O_CLOEXEC))
        return fail(J, "infra_error", "pipe: %s", strerror(errno)), -1;
    J->go_r = go[0], J->go_w = go[1], J->done_r = done[0], J->done_w = done[1];
    char **argv = build_argv(J);
    if (!argv)
        return fail(J, "infra_error", "out of memory"), -1;
    J->t_spawn = now_s();
    prctl(PR_SET_CHILD_SUBREAPER, 1); /* see reap_orphans() */
    J->pid = fork();
    if (J->pid < 0)
        return fail(J, "infra_error", "fork: %s", strerror(errno)), -1;
    if (J->pid == 0)
        child_exec(J, argv);
    setpgid(J->pid, J->pid); /* also here, so a kill right after fork hits the group */
    g_child = J->pid;
    for (int i = J->o.ncmd; argv[i]; i++) /* the appended protocol arguments */
        free(argv[i]);
    free(argv);
    J->pidfd = (int)syscall(SYS_pidfd_open, J->pid, 0);
    /* A GO write never blocks the judge: a child that stops reading is a violation. */
    fcntl(J->go_w, F_SETFL, fcntl(J->go_w, F_GETFL) | O_NONBLOCK);
    close(J->go_r), close(J->done_w);
    J->go_r = J->done_w = -1;
    return 0;
}

/* ---------------------------------------------------------------- child lifetime */

static double ru_cpu_s(const struct rusage *ru)
{
    return (double)(ru->ru_utime.tv_sec + ru->ru_stime.tv_sec) +
           (double)(ru->ru_utime.tv_usec + ru->ru_stime.tv_usec) * 1e-6;
}

/* Up to `max` child pids of `pid` (its main thread's children), into `out`; the count. */
static int children_of(pid_t pid, pid_t *out, int max)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)pid, (int)pid);
    FILE *f = fopen(path, "re");
    int n = 0, c;
    while (f && n < max && fscanf(f, "%d", &c) == 1)
        out[n++] = c;
    if (f)
        fclose(f);
    return n;
}

/* SIGKILL the children of pid; with leaves_only, only the processes at the bottom of
 * the tree (the runner), so that bwrap reaps them and exits normally. */
static void kill_tree(pid_t pid, int depth, int leaves_only)
{
    pid_t kids[64];
    int n = depth < 8 ? children_of(pid, kids, 64) : 0;
    for (int i = 0; i < n; i++) {
        if (leaves_only)
            kill_tree(kids[i], depth + 1, 1);
        else
            kill(kids[i], SIGKILL);
    }
    if (leaves_only && n == 0 && depth > 0)
        kill(pid, SIGKILL);
}

/* bwrap's outer process exits as soon as its pid-1 init reports the exit code, without
 * reaping that init, so the runner's CPU time would leave with it. The judge is a child
 * subreaper (set before fork): the orphans come here, and the init's rusage includes the
 * runner it reaped. Anything still alive after 2 s is killed. */
static void reap_orphans(judge *J)
{
    double end = now_s() + 2.0;
    for (int killed = 0;;) {
        struct rusage ru;
        int st;
        pid_t r = wait4(-1, &st, WNOHANG | __WALL, &ru);
        if (r > 0)
            J->r.cpu_s += ru_cpu_s(&ru);
        if (r > 0 || (r < 0 && errno == EINTR))
            continue;
        if (r < 0)
            return; /* ECHILD: the whole tree is accounted for */
        if (now_s() > end) {
            if (killed)
                return;
            kill_tree(getpid(), 0, 0);
            killed = 1, end = now_s() + 1.0;
        }
        nanosleep(&(struct timespec){0, 2000000}, NULL);
    }
}

/* Reap the direct child within max_wait_s, then its orphans; cpu_s = user+sys of all. */
static int reap(judge *J, double max_wait_s)
{
    double end = now_s() + max_wait_s;
    while (!J->reaped) {
        struct rusage ru;
        int st;
        pid_t r = wait4(J->pid, &st, WNOHANG, &ru);
        if (r == J->pid) {
            J->reaped = 1;
            J->r.wall_s = now_s() - J->t_spawn;
            J->r.cpu_s = ru_cpu_s(&ru);
            set_exit_fields(J, st);
            reap_orphans(J);
            return 1;
        }
        if (r < 0 && errno != EINTR)
            return J->reaped = 1; /* not our child any more; nothing to account */
        double left = end - now_s();
        if (left <= 0)
            return 0;
        struct pollfd p = {J->pidfd, POLLIN, 0};
        struct timespec ts = {0, 5000000}; /* poll the pidfd, or nap 5 ms without one */
        if (left < 0.005)
            ts.tv_nsec = (long)(left * 1e9);
        ppoll(J->pidfd >= 0 ? &p : NULL, J->pidfd >= 0 ? 1 : 0, &ts, NULL);
    }
    return 1;
}

static void kill_sandbox(judge *J)
{
    if (J->reaped)
        return;
    kill_tree(J->pid, 0, 1);
    if (reap(J, 1.0))
        return;
    kill(-J->pid, SIGKILL);
    kill(J->pid, SIGKILL);
    reap(J, 5.0);
}

/* Polite end: EXIT message, then the pipe closes; kill if it lingers. */
static void shutdown_sandbox(judge *J)
{
    if (J->pid <= 0 || J->reaped)
        return;
    hq_go_msg m = {HQ_MAGIC, HQ_EXIT, {{0}}};
    if (write(J->go_w, &m, sizeof m) < 0) { /* already gone: reap below */ }
    close(J->go_w);
    J->go_w = -1;
    if (!reap(J, 1.0))
        kill_sandbox(J);
}

#include "judge_watch.h" /* the runner seen from outside: seccomp, CPU, threads */

enum { GOT, DIED, TIMED_OUT, GARBAGE };

/* Wait for one status record. Anything but the expected record is GARBAGE. */
static int wait_msg(judge *J, uint32_t tag, double deadline)
{
    hq_status_msg m;
    size_t got = 0;
    for (;;) {
        double left = deadline - now_s();
        if (left <= 0)
            return TIMED_OUT;
        struct pollfd p[2] = {{J->done_r, POLLIN, 0}, {J->pidfd, POLLIN, 0}};
        struct timespec ts = {(time_t)left, (long)((left - floor(left)) * 1e9)};
        if (ppoll(p, J->pidfd >= 0 ? 2 : 1, &ts, NULL) < 0 && errno != EINTR)
            return DIED;
        if (p[0].revents) {
            ssize_t r = read(J->done_r, (char *)&m + got, sizeof m - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                return DIED;
            if ((got += (size_t)r) < sizeof m)
                continue;
            return m.magic == HQ_MAGIC && m.tag == tag ? GOT : GARBAGE;
        }
        if (J->pidfd >= 0 && p[1].revents)
            return DIED;
    }
}

enum { PH_SETUP, PH_LOADING, PH_CALL, PH_IDLE };

/* The sandbox died on its own: wait for the exit status, then name the cause. Output is
 * quoted only before LOAD (bwrap's, setpriv's or the runner's own words): after it, the
 * output file holds what the candidate printed, which never reaches a verdict. */
static void classify_death(judge *J, int phase, const char *during)
{
    if (!reap(J, 2.0))
        kill_sandbox(J);
    int sig = J->r.signal, code = J->r.exit_code;
    char how[96], out[400];
    if (sig > 0)
        snprintf(how, sizeof how, "killed by signal %d (%s)", sig, strsignal(sig));
    else
        snprintf(how, sizeof how, "exited with code %d", code);
    if (phase == PH_SETUP) { /* the candidate has not run yet: bwrap, setpriv or runner setup */
        output_head(J, out, sizeof out);
        fail(J, "infra_error", "sandbox failed before loading the candidate (%s): %s", how, out);
    } else if (sig == SIGSYS)
        fail(J, "violation", "forbidden system call (seccomp) %s", during);
    else if (phase == PH_LOADING && code == HQ_RUNNER_LOADFAIL)
        fail(J, "runtime_error", "the library could not be loaded or has no entry point "
                                 "(undefined symbol?); its output is not quoted");
    else if (sig == SIGKILL || sig == SIGXCPU)
        fail(J, "timeout", "%s %s (CPU-time limit?)", how, during);
    else if (sig > 0 || phase == PH_LOADING)
        fail(J, "runtime_error", "%s %s", how, during);
    else
        fail(J, "runtime_error", "exited (code %d) inside the kernel %s; printed output ignored",
             code, during);
}

/* ---------------------------------------------------------------- calls */

/* After LOAD the runner could not be inspected from outside. A dead runner is the
 * candidate's doing (a thread of its constructor may kill it at any moment): name the
 * death. Only a live runner the judge cannot read is the node's failure (infra_error). */
static int runner_lost(judge *J, const char *why)
{
    if (reap(J, 0.5)) {
        classify_death(J, PH_LOADING, "just after loading the candidate");
        return -1;
    }
    kill_sandbox(J);
    return fail(J, "infra_error", "%s", why), -1;
}

static int startup(judge *J)
{
    double dl = fmin(J->t_spawn + J->o.startup_timeout_s, J->deadline);
    int r = wait_msg(J, HQ_LOAD, dl);
    if (r == DIED)
        return classify_death(J, PH_SETUP, "during setup"), -1;
    if (r != GOT) { /* nothing of the candidate has run yet */
        kill_sandbox(J);
        if (r == TIMED_OUT)
            return fail(J, "infra_error", "sandbox did not start within %g s",
                        J->o.startup_timeout_s), -1;
        return fail(J, "infra_error", "protocol error during sandbox setup"), -1;
    }
    int attached = attach_runner(J) == 0; /* a candidate that dies at once is not found */
    r = wait_msg(J, HQ_READY, fmin(now_s() + J->o.startup_timeout_s, J->deadline));
    if (r == GOT && !attached && attach_runner(J) != 0)
        return runner_lost(J, "cannot find the sandboxed runner or read its CPU clock");
    if (r == GOT) {
        int seccomp = check_seccomp(J);
        if (seccomp == -2)
            return runner_lost(J, "cannot read the runner's seccomp state");
        if (seccomp != 0)
            return kill_sandbox(J), -1;
        J->cpu_at_done = runner_cpu_s(J);
        snprintf(J->last_call, sizeof J->last_call, "loading");
        return 0;
    }
    if (r == DIED)
        return classify_death(J, PH_LOADING, "while loading the candidate (constructor?)"), -1;
    kill_sandbox(J);
    if (r == TIMED_OUT)
        return fail(J, "timeout", "candidate library did not load within %g s",
                    J->o.startup_timeout_s), -1;
    return fail(J, "violation", "wrote to the control pipe while loading"), -1;
}

/* Between calls nothing may arrive on the control pipe and the child must be alive. */
static int idle_ok(judge *J)
{
    struct pollfd p[2] = {{J->done_r, POLLIN, 0}, {J->pidfd, POLLIN, 0}};
    if (poll(p, J->pidfd >= 0 ? 2 : 1, 0) <= 0)
        return 1;
    char buf[64];
    if ((p[0].revents & POLLIN) && read(J->done_r, buf, sizeof buf) > 0) {
        kill_sandbox(J);
        return fail(J, "violation", "unexpected message on the control pipe after %s",
                    J->last_call), 0;
    }
    char during[200];
    snprintf(during, sizeof during, "after %s returned (background thread?)", J->last_call);
    return classify_death(J, PH_IDLE, during), 0;
}

#include "judge_checks.h" /* inputs in and out of the shared buffers, the checks */

/* Send GO without ever blocking: the pipe holds far more than one record, so a full pipe
 * means the child stopped reading its control pipe. */
static int send_go(judge *J, const hq_shape *s)
{
    hq_go_msg go = {HQ_MAGIC, HQ_GO, *s};
    ssize_t w;
    do
        w = write(J->go_w, &go, sizeof go);
    while (w < 0 && errno == EINTR);
    if (w == (ssize_t)sizeof go)
        return GOT;
    if (w < 0 && errno == EAGAIN) {
        kill_sandbox(J);
        return fail(J, "violation", "stopped reading its control pipe (GO not taken) before %s",
                    J->last_call), GARBAGE;
    }
    return DIED;
}

/* A call whose outputs were wrong: was its DONE forged? A kernel that takes over the
 * control protocol writes DONE before computing, and the runner's own DONE follows once
 * the product is done. Whether the judge's snapshot beat the late product is a race, so
 * without this look the same attack came out `violation` in one run and `wrong_result`
 * in another (seen in CI). A second message within 50 ms names it; honest wrong kernels
 * pay only the wait, and only once per run (the first failure ends the run). */
static void second_done(judge *J, const char *what)
{
    if (!J->r.status || strcmp(J->r.status, "wrong_result") != 0)
        return;
    struct pollfd p = {J->done_r, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0 || !(p.revents & POLLIN))
        return;
    hq_status_msg m;
    if (read(J->done_r, &m, sizeof m) <= 0)
        return; /* the pipe closed: the runner died after its wrong answer, nothing more */
    char wrong[600]; /* the wrong result's own message, shortened to fit in ours */
    snprintf(wrong, sizeof wrong, "%.599s", J->r.message);
    kill_sandbox(J);
    J->r.status = "violation";
    snprintf(J->r.message, sizeof J->r.message,
             "a second message on the control pipe after %s, whose DONE came before its "
             "outputs were written (%.599s): DONE reported by the kernel itself", what, wrong);
}

/* One call: fresh inputs, clock, inputs visible, GO, wait for DONE under the call
 * timeout, snapshot, verify. `full`: 1 always, 0 never, -1 drawn after the call. */
static int do_call(judge *J, const hq_shape *s, const char *what, int full, double *dt)
{
    prepare_private(J, s);
    if (!idle_ok(J) || !threads_asleep(J) || !freeze_runner(J))
        return -1;
    publish_inputs(J, s); /* the runner is stopped: nothing of it can see them yet */
    if (!gap_ok(J)) {
        thaw_runner(J);
        return -1;
    }
    snprintf(J->last_call, sizeof J->last_call, "%s", what);
    int r = send_go(J, s);
    double limit = fmin(now_s() + J->o.call_timeout_s, J->deadline);
    double t0 = now_s(); /* before the thaw: the inputs become visible inside the clock */
    thaw_runner(J);
    if (r == GARBAGE)
        return -1;
    if (r == GOT)
        r = wait_msg(J, HQ_DONE, limit);
    double t1 = now_s();
    J->cpu_at_done = runner_cpu_s(J);
    if (r == GOT)
        snapshot_outputs(J, s);
    *dt = J->last_call_s = t1 - t0;
    char during[200];
    snprintf(during, sizeof during, "during %s", what);
    if (r == DIED)
        return classify_death(J, PH_CALL, during), -1;
    if (r == GARBAGE) {
        kill_sandbox(J);
        return fail(J, "violation", "wrote garbage to the control pipe %s", during), -1;
    }
    if (r == TIMED_OUT) {
        kill_sandbox(J);
        if (limit < J->deadline)
            return fail(J, "timeout", "call exceeded %g s %s", J->o.call_timeout_s, during), -1;
        return fail(J, "timeout", "total timeout of %g s reached %s", J->o.total_timeout_s,
                    during), -1;
    }
    if (verify(J, s, what, full) == 0)
        return 0;
    second_done(J, what);
    return -1;
}

/* ---------------------------------------------------------------- schedule */

/* Would k more benchmark iterations (call + checks) still end before the deadline? */
static int fits(judge *J, int k)
{
    return now_s() + k * J->iter_s * 1.25 + 0.5 <= J->deadline;
}

static int bench_call(judge *J, const char *kind, long idx, int full, dvec *into)
{
    char what[128], shp[64];
    J->fam->format_shape(&J->o.dims, shp, sizeof shp);
    snprintf(what, sizeof what, "%s call %ld (%s)", kind, idx, shp);
    double t = now_s(), dt;
    if (do_call(J, &J->o.dims, what, full, &dt) != 0)
        return -1;
    /* a full check is a one-off cost: only the call itself predicts later iterations */
    J->iter_s = fmax(J->iter_s, full > 0 ? dt : now_s() - t);
    double index = (double)call_index(J);
    if (dvec_push(into, dt) || (full > 0 && dvec_push(&J->r.full_calls, index)))
        return fail(J, "infra_error", "out of memory"), -1;
    return 0;
}

static void run_schedule(judge *J)
{
    const options *o = &J->o;
    char what[128], shp[64];
    double dt;
    for (int i = 0; i < o->nchecks; i++) {
        J->fam->format_shape(&o->checks[i], shp, sizeof shp);
        snprintf(what, sizeof what, "check call %d (%s)", i + 1, shp);
        if (do_call(J, &o->checks[i], what, 1, &dt) != 0 || dvec_push(&J->r.check, dt))
            return;
    }
    /* full comparisons of the benchmark shape: the first warm-up at once, then calls
     * kept at random after they returned (-1) and compared after the run, where the
     * shape is small enough */
    int full = J->fam->full_check_work(&o->dims) <= o->full_max_work;
    double t_warm = now_s();
    long cap = o->warmup_calls > o->max_calls ? o->warmup_calls : o->max_calls;
    for (long w = 0; w < cap; w++) {
        if (w >= o->warmup_calls && now_s() - t_warm >= o->warmup_min_s)
            break;
        if (w >= 1 && !fits(J, 4)) /* keep room for the 3 timed calls that must follow */
            break;
        if (bench_call(J, "warm-up", w + 1, !full ? 0 : w == 0 ? 1 : -1, &J->r.warm))
            return;
    }
    double sum = 0;
    long n = 0;
    for (; n < o->max_calls; n++) {
        if ((n >= o->min_calls && sum >= o->min_time_s) || !fits(J, 1))
            break;
        if (bench_call(J, "timed", n + 1, full ? -1 : 0, &J->r.times))
            return;
        sum += J->r.times.v[n];
    }
    full_check_kept(J);
    if (J->r.status)
        return;
    long need = o->min_calls < 3 ? o->min_calls : 3;
    if (n < need)
        fail(J, "timeout", "only %ld timed calls fit in the total timeout of %g s", n,
             o->total_timeout_s);
    else if (n < o->min_calls)
        snprintf(J->r.message, sizeof J->r.message,
                 "only %ld of %ld timed calls fit in the total timeout", n, o->min_calls);
}

int main(int argc, char **argv)
{
    static judge J;
    judge_init(&J, &hq_family_judge);
    if (parse_options(&J.o, J.fam, argc, argv) != 0)
        return 2;
    J.t_start = now_s();
    J.deadline = J.t_start + J.o.total_timeout_s;
    J.seed_state = J.o.seed;
    J.own_filters = (int)proc_status_field(0, "Seccomp_filters");
    signal(SIGPIPE, SIG_IGN); /* a dead child must not kill the judge */
    signal(SIGTERM, on_terminate);
    signal(SIGINT, on_terminate);
    signal(SIGHUP, on_terminate);
    /* A consumer killed with -9 takes its judge down at once, and the judge its sandbox
     * (on_terminate): no benchmark runs on for seconds beside the task's retry. */
    pid_t parent = getppid();
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) /* the parent died before the line above */
        raise(SIGTERM);
    if (setup_judge(&J) == 0 && spawn(&J) == 0 && startup(&J) == 0)
        run_schedule(&J);
    shutdown_sandbox(&J);
    if (!J.r.status)
        J.r.status = "ok";
    print_json(&J);
    return 0;
}
