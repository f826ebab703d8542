#!/usr/bin/env bash
# selftest.sh: build the DGEMM judge, runner and peak into a temp dir, then run honest
# and hostile candidates through the real sandbox (setpriv + prlimit + bwrap) and check
# the judge's verdicts. Prints each judge JSON line; exits non-zero if any expectation
# fails. Run as root (setpriv to an unprivileged uid); without root setpriv is skipped.
#
#   kernels/harness/selftest.sh [--keep]        (SANDBOX_UID=61000 by default)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SANDBOX_UID=${SANDBOX_UID:-61000}
WORK=$(mktemp -d /tmp/hpcq-selftest.XXXXXX)
chmod 755 "$WORK" # the sandbox uid must reach the bind-mounted candidate dirs
[ "${1:-}" = "--keep" ] || trap 'rm -rf "$WORK"' EXIT
FAILS=0

build() {
    gcc -O2 -march=native -std=gnu11 -Wall -Werror -o "$WORK/judge-dgemm" \
        "$ROOT/kernels/harness/judge.c" "$ROOT/kernels/dgemm/dgemm_judge.c" -lm &&
    gcc -O2 -std=gnu11 -Wall -Werror -o "$WORK/runner-dgemm" \
        "$ROOT/kernels/harness/runner.c" "$ROOT/kernels/dgemm/dgemm_call.c" -ldl &&
    gcc -O2 -march=native -Wall -Werror -o "$WORK/peak" "$ROOT/kernels/harness/peak.c"
}

# The prefix the consumer builds, with the process limit as a parameter: every thread
# counts against RLIMIT_NPROC, and bwrap itself uses 1 of them (the runner is pid 1).
prefix() { # $1 = dir bound at /sbx, $2 = nproc, $3 = OMP_NUM_THREADS
    if [ "$(id -u)" = 0 ]; then
        echo setpriv --reuid="$SANDBOX_UID" --regid="$SANDBOX_UID" --clear-groups --
    fi
    echo prlimit --as=4294967296 --cpu=30 --nproc="$2" --fsize=16777216 --nofile=64 \
        --core=0 -- bwrap --ro-bind /usr /usr --symlink usr/lib /lib --symlink usr/lib64 \
        /lib64 --symlink usr/bin /bin --ro-bind "$1" /sbx --dev /dev --remount-ro /dev \
        --size 16777216 --tmpfs /tmp --unshare-all --die-with-parent --new-session \
        --cap-drop ALL --clearenv --as-pid-1 \
        --setenv OMP_NUM_THREADS "$3" --setenv OMP_WAIT_POLICY passive --
}

# Compile one candidate the way the consumer does: cand.o, then a shared link with
# libgomp, into its own directory next to a copy of the runner.
candidate() { # $1 = name; source on stdin
    local d="$WORK/$1"
    mkdir -p "$d" && cat >"$d/cand.c" && cp "$WORK/runner-dgemm" "$d/runner" &&
    gcc -O3 -march=native -fPIC -fopenmp -w -c "$d/cand.c" -o "$d/cand.o" &&
    gcc -shared -nostartfiles -fopenmp "$d/cand.o" -o "$d/cand.so" -lm && chmod -R a+rX "$d"
}

count_calls() { sed -n 's/.*"times_s": \[\([^]]*\)\], "warmup_s": \[\([^]]*\)\], "check_s": \[\([^]]*\)\].*/\1,\2,\3/p' |
    tr ',' '\n' | grep -c '[0-9]'; }
status_of() { sed -n 's/^{"status": "\([a-z_]*\)".*/\1/p'; }
field() { sed -n "s/.*\"$1\": \\([^,}]*\\).*/\\1/p"; }
sum_times() { sed -n 's/.*"times_s": \[\([^]]*\)\].*/\1/p' | tr ',' '\n' |
    awk '{s += $1} END {printf "%.6f", s}'; }

# run NAME EXPECT [judge options...]; EXPECT: a status, "a|b", or "!ok".
# Env: NPROC (default 3), THREADS (default 1).
run() {
    local name=$1 expect=$2
    shift 2
    local d="$WORK/$name" json st ok=0 try
    # RLIMIT_NPROC counts every process of the uid on the host: other sandboxes of the
    # same uid (a consumer running tests) make bwrap fail with EAGAIN. That is an
    # infra_error by design; retry it a few times rather than report a false failure.
    for try in 1 2 3 4 5 6 7 8; do
        json=$(env -i PATH=/usr/bin:/bin "$WORK/judge-dgemm" --dims 96,80,72 --check-shapes "17,19,23;1,1,1;64,33,71" \
            --warmup-calls 2 --warmup-min-s 0 --min-calls 5 --min-time-s 0.02 \
            --call-timeout-s 3 --total-timeout-s 30 --output-file "$d/output.txt" "$@" -- \
            $(prefix "$d" "${NPROC:-3}" "${THREADS:-1}") /sbx/runner /sbx/cand.so dgemm)
        [[ "$json" == *'"infra_error"'*'Resource temporarily unavailable'* ]] || break
        echo "     ($name: uid $SANDBOX_UID busy elsewhere, retry $try)"
        sleep 1
    done
    st=$(printf '%s' "$json" | status_of)
    case "$expect" in
    !*) [ -n "$st" ] && [ "$st" != "${expect#!}" ] && ok=1 ;;
    *) [[ "|$expect|" == *"|$st|"* ]] && ok=1 ;;
    esac
    LAST_JSON=$json
    if [ $ok = 1 ]; then printf 'PASS %-16s expect %-22s %s\n' "$name" "$expect" "$json"
    else printf 'FAIL %-16s expect %-22s %s\n' "$name" "$expect" "$json"; FAILS=$((FAILS + 1)); fi
}

build || { echo "FAIL build"; exit 1; }
echo "peak: $(taskset -c 0 "$WORK/peak")"

H='#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#define ARGS int M, int N, int K, const double *A, const double *B, double *C'
IKJ='for (int i = 0; i < M; i++) { for (int j = 0; j < N; j++) C[i*N+j] = 0;
  for (int k = 0; k < K; k++) { double a = A[i*K+k];
    for (int j = 0; j < N; j++) C[i*N+j] += a * B[k*N+j]; } }'

candidate good <<<"$H
void dgemm(ARGS) { $IKJ }"
candidate printer <<<"$H
void dgemm(ARGS) { printf(\"GFLOPS: 9999\\n\"); fflush(stdout); $IKJ }"
candidate nan <<<"$H
void dgemm(ARGS) { }"
candidate partial <<<"$H
void dgemm(ARGS) { int m = M; M = M > 1 ? M - 1 : M; $IKJ (void)m; }"
candidate skipk <<<"$H
void dgemm(ARGS) { K = K > 1 ? K - 1 : K; $IKJ }"
candidate float <<<"$H
void dgemm(ARGS) { for (int i = 0; i < M; i++) for (int j = 0; j < N; j++) {
  float s = 0; for (int k = 0; k < K; k++) s += (float)A[i*K+k] * (float)B[k*N+j];
  C[i*N+j] = s; } }"
candidate segv <<<"$H
void dgemm(ARGS) { *(volatile int *)16 = 1; }"
candidate spin <<<"$H
void dgemm(ARGS) { for (volatile int x = 0;; x++) ; }"
candidate write_a <<<"$H
void dgemm(ARGS) { ((double *)A)[0] = 0; $IKJ }"
candidate mprotect_a <<<"$H
#include <sys/mman.h>
#include <stdint.h>
void dgemm(ARGS) { void *p = (void *)((uintptr_t)A & ~(uintptr_t)4095);
  mprotect(p, 4096, PROT_READ | PROT_WRITE); ((double *)A)[0] = 0; $IKJ }"
candidate socket_libc <<<"$H
#include <sys/socket.h>
void dgemm(ARGS) { socket(AF_INET, SOCK_STREAM, 0); $IKJ }"
candidate socket_raw <<<"$H
void dgemm(ARGS) { long r; __asm__ volatile (\"syscall\" : \"=a\"(r) : \"0\"(41L), \"D\"(2L),
  \"S\"(1L), \"d\"(0L) : \"rcx\", \"r11\", \"memory\"); $IKJ }"
candidate fork <<<"$H
void dgemm(ARGS) { fork(); $IKJ }"
candidate exec <<<"$H
void dgemm(ARGS) { execl(\"/bin/sh\", \"sh\", \"-c\", \"echo pwned\", (char *)0); $IKJ }"
candidate fopen <<<"$H
void dgemm(ARGS) { FILE *f = fopen(\"/tmp/x\", \"w\"); if (f) fclose(f); $IKJ }"
candidate fopen_read <<<"$H
void dgemm(ARGS) { FILE *f = fopen(\"/etc/passwd\", \"r\"); if (f) { fclose(f); return; } $IKJ }"
candidate exit0 <<<"$H
void dgemm(ARGS) { exit(0); }"
candidate abort <<<"$H
void dgemm(ARGS) { abort(); }"
candidate ctor_socket <<<"$H
#include <sys/socket.h>
__attribute__((constructor)) static void init(void) { socket(AF_INET, SOCK_STREAM, 0); }
void dgemm(ARGS) { $IKJ }"
candidate ctor_spin <<<"$H
__attribute__((constructor)) static void init(void) { for (volatile int x = 0;; x++) ; }
void dgemm(ARGS) { $IKJ }"
candidate fake_done <<<"$H
#include <stdint.h>
void dgemm(ARGS) { uint32_t msg[2] = {0x71637068u, 3}; /* forged DONE on every fd */
  for (int fd = 3; fd < 64; fd++) write(fd, msg, sizeof msg); $IKJ }"
candidate omp <<<"$H
#include <omp.h>
void dgemm(ARGS) { int team = 0; /* C stays NaN unless two threads really ran */
#pragma omp parallel
  {
#pragma omp single
    team = omp_get_num_threads();
#pragma omp for schedule(static)
    for (int i = 0; i < M; i++) { for (int j = 0; j < N; j++) C[i*N+j] = 0;
      for (int k = 0; k < K; k++) { double a = A[i*K+k];
        for (int j = 0; j < N; j++) C[i*N+j] += a * B[k*N+j]; } }
  }
  if (team != 2) C[0] = 0.0 / 0.0; }"
candidate thread <<<"$H
#include <pthread.h>
#include <time.h>
static struct { int M, N, K; const double *A, *B; double *C; } job;
static void *late(void *p) { (void)p; nanosleep(&(struct timespec){0, 20000000}, 0);
  int M = job.M, N = job.N, K = job.K; const double *A = job.A, *B = job.B; double *C = job.C;
  $IKJ return 0; }
void dgemm(ARGS) { pthread_t t; job.M = M; job.N = N; job.K = K; job.A = A; job.B = B;
  job.C = C; if (pthread_create(&t, 0, late, 0) == 0) pthread_detach(t); }"
candidate bigmalloc <<<"$H
void dgemm(ARGS) { volatile double *p = malloc((size_t)1 << 40); p[12345] = 1; $IKJ }"
candidate burn <<<"$H
#include <time.h>
static double cpu_now(void) { struct timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec; }
void dgemm(ARGS) { double t0 = cpu_now(); $IKJ while (cpu_now() - t0 < 0.05) ; }"
candidate naive <<<"$H
void dgemm(ARGS) { for (int i = 0; i < M; i++) for (int j = 0; j < N; j++) { double s = 0;
  for (int k = 0; k < K; k++) s += A[i*K+k] * B[k*N+j]; C[i*N+j] = s; } }"

run good ok --cores 0
run printer ok --cores 0
grep -q "GFLOPS: 9999" "$WORK/printer/output.txt" || { echo "FAIL printer output not captured"; FAILS=$((FAILS + 1)); }
run nan wrong_result
run partial wrong_result
run skipk wrong_result
run float wrong_result
run segv runtime_error
run spin timeout --call-timeout-s 1
run write_a runtime_error
run mprotect_a runtime_error
run socket_libc violation
run socket_raw violation
run fork violation
run exec violation
run fopen violation
run fopen_read ok # read-only opens are allowed (dlopen needs them); /etc is not there
run exit0 runtime_error
run abort runtime_error
run ctor_socket "violation|runtime_error"
run ctor_spin timeout --startup-timeout-s 2
run fake_done '!ok'
NPROC=8 THREADS=2 run omp ok --cores 0,1 --dims 256,256,256
echo "     omp: cpu_s $(printf "%s" "$LAST_JSON" | field cpu_s) for sum(times_s) $(printf "%s" "$LAST_JSON" | sum_times) (2 threads: cpu > wall)"
NPROC=8 run thread '!ok'
run bigmalloc runtime_error
mkdir -p "$WORK/missing" # no runner inside: bwrap itself fails, before the candidate
run missing infra_error
# cpu_s must include the runner's CPU time (Python cross-checks it against the wall
# time). Wall times are load-dependent on a shared machine, so "burn" spends a known
# 50 ms of its own CPU time per call: cpu_s >= calls x 50 ms holds under any load.
run burn ok --min-calls 4 --min-time-s 0 --cores 0
calls=$(printf '%s' "$LAST_JSON" | count_calls)
cpu=$(printf '%s' "$LAST_JSON" | field cpu_s)
if awk -v c="$cpu" -v n="$calls" 'BEGIN { exit !(n > 0 && c >= 0.05 * n) }'; then
    echo "PASS cpu_s $cpu >= $calls calls x 0.05 s burnt in the runner"
else
    echo "FAIL cpu_s $cpu < $calls calls x 0.05 s: runner time not accounted"; FAILS=$((FAILS + 1))
fi
# for scale: a naive ijk kernel at 512 (times depend on the load of core 0)
run naive ok --dims 512,512,512 --check-shapes "" --min-calls 3 --min-time-s 0 --warmup-calls 1 --cores 0
echo "     naive: cpu_s $(printf '%s' "$LAST_JSON" | field cpu_s) for sum(times_s) $(printf '%s' "$LAST_JSON" | sum_times)"

echo "selftest: $FAILS failure(s)"
[ "$FAILS" = 0 ]
