/* seccomp_filter.h: the runner's two seccomp layers, hand-written classic BPF (no
 * libseccomp, so CPU nodes need nothing beyond kernel headers). Header-only because
 * the runner is built from runner.c + <family>_call.c alone.
 *
 * Layer 1 (deny list, default ALLOW) covers the runner's trusted setup.
 * Layer 2 (allow list, default KILL_PROCESS) is installed before the candidate library
 *   is dlopen()ed: its load-time code and every call run under both layers, and layer 2
 *   forbids seccomp() itself, so nothing the candidate runs can add or fake a filter.
 *   The judge checks from outside that the runner carries exactly these two filters.
 * Both kill the whole process (SIGSYS, seen by the judge as bwrap exit 128+31).
 * clone3 returns ENOSYS so glibc falls back to clone, whose flags (arg0 on x86_64 and
 * aarch64) BPF can inspect: only threads (CLONE_THREAD, no namespace flags) pass.
 */
#ifndef HPCQ_SECCOMP_FILTER_H
#define HPCQ_SECCOMP_FILTER_H

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define HQ_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define HQ_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "seccomp_filter.h: only x86_64 and aarch64 are supported"
#endif

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "seccomp_filter.h: argument loads assume little endian"
#endif

#define HQ_KILL SECCOMP_RET_KILL_PROCESS
#define HQ_ALLOW SECCOMP_RET_ALLOW
#define HQ_ERRNO(e) (SECCOMP_RET_ERRNO | ((e) & SECCOMP_RET_DATA))
/* low 32 bits of argument 0: clone flags, kill/tgkill pid (both fit in 32 bits) */
#define HQ_ARG0_LO offsetof(struct seccomp_data, args[0])
#define HQ_NS_FLAGS                                                                        \
    (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |         \
     CLONE_NEWPID | CLONE_NEWNET)

typedef struct {
    struct sock_filter f[192];
    unsigned n;
    int overflow;
} hq_bpf;

static void hq_bpf_op(hq_bpf *p, uint16_t code, uint8_t jt, uint8_t jf, uint32_t k)
{
    if (p->n >= sizeof p->f / sizeof p->f[0]) {
        p->overflow = 1;
        return;
    }
    p->f[p->n++] = (struct sock_filter)BPF_JUMP(code, k, jt, jf);
}

static void hq_bpf_ret(hq_bpf *p, uint32_t action) { hq_bpf_op(p, BPF_RET | BPF_K, 0, 0, action); }

/* Wrong architecture (e.g. int 0x80 i386 calls) and x32 syscall numbers are killed,
 * otherwise a forbidden call could hide behind another numbering. Leaves nr in A. */
static void hq_bpf_prologue(hq_bpf *p)
{
    hq_bpf_op(p, BPF_LD | BPF_W | BPF_ABS, 0, 0, offsetof(struct seccomp_data, arch));
    hq_bpf_op(p, BPF_JMP | BPF_JEQ | BPF_K, 1, 0, HQ_AUDIT_ARCH);
    hq_bpf_ret(p, HQ_KILL);
    hq_bpf_op(p, BPF_LD | BPF_W | BPF_ABS, 0, 0, offsetof(struct seccomp_data, nr));
#ifdef __x86_64__
    hq_bpf_op(p, BPF_JMP | BPF_JGE | BPF_K, 0, 1, 0x40000000u); /* __X32_SYSCALL_BIT */
    hq_bpf_ret(p, HQ_KILL);
#endif
}

/* if (nr == k) return action; (A still holds nr afterwards) */
static void hq_bpf_on(hq_bpf *p, uint32_t nr, uint32_t action)
{
    hq_bpf_op(p, BPF_JMP | BPF_JEQ | BPF_K, 0, 1, nr);
    hq_bpf_ret(p, action);
}

/* clone: allow a thread (CLONE_THREAD set, no namespace flags), kill anything else. */
static void hq_bpf_clone_threads_only(hq_bpf *p)
{
    hq_bpf_op(p, BPF_JMP | BPF_JEQ | BPF_K, 0, 5, __NR_clone);
    hq_bpf_op(p, BPF_LD | BPF_W | BPF_ABS, 0, 0, HQ_ARG0_LO);
    hq_bpf_op(p, BPF_ALU | BPF_AND | BPF_K, 0, 0, CLONE_THREAD | HQ_NS_FLAGS);
    hq_bpf_op(p, BPF_JMP | BPF_JEQ | BPF_K, 0, 1, CLONE_THREAD);
    hq_bpf_ret(p, HQ_ALLOW);
    hq_bpf_ret(p, HQ_KILL);
}

/* kill/tgkill: allowed only at our own process, so abort() and raise() still work
 * (they then die with SIGABRT etc., a runtime error, not a violation). */
static void hq_bpf_own_pid_only(hq_bpf *p, uint32_t nr, uint32_t self)
{
    hq_bpf_op(p, BPF_JMP | BPF_JEQ | BPF_K, 0, 4, nr);
    hq_bpf_op(p, BPF_LD | BPF_W | BPF_ABS, 0, 0, HQ_ARG0_LO);
    hq_bpf_op(p, BPF_JMP | BPF_JEQ | BPF_K, 0, 1, self);
    hq_bpf_ret(p, HQ_ALLOW);
    hq_bpf_ret(p, HQ_KILL);
}

/* if (nr == k) return (arg & mask) ? HQ_KILL : HQ_ALLOW;  (low 32 bits of the argument) */
static void hq_bpf_allow_unless_bits(hq_bpf *p, uint32_t nr, int arg, uint32_t mask)
{
    hq_bpf_op(p, BPF_JMP | BPF_JEQ | BPF_K, 0, 5, nr);
    hq_bpf_op(p, BPF_LD | BPF_W | BPF_ABS, 0, 0, offsetof(struct seccomp_data, args[arg]));
    hq_bpf_op(p, BPF_ALU | BPF_AND | BPF_K, 0, 0, mask);
    hq_bpf_op(p, BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0);
    hq_bpf_ret(p, HQ_ALLOW);
    hq_bpf_ret(p, HQ_KILL);
}

/* if (nr == k) return arg == value ? HQ_KILL : HQ_ALLOW;  (low 32 bits) */
static void hq_bpf_allow_unless_eq(hq_bpf *p, uint32_t nr, int arg, uint32_t value)
{
    hq_bpf_op(p, BPF_JMP | BPF_JEQ | BPF_K, 0, 4, nr);
    hq_bpf_op(p, BPF_LD | BPF_W | BPF_ABS, 0, 0, offsetof(struct seccomp_data, args[arg]));
    hq_bpf_op(p, BPF_JMP | BPF_JEQ | BPF_K, 0, 1, value);
    hq_bpf_ret(p, HQ_KILL);
    hq_bpf_ret(p, HQ_ALLOW);
}

/* Flags that make an open write, create or truncate: any of them is refused. */
#define HQ_OPEN_WRITE_BITS                                                                 \
    ((uint32_t)(O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND | O_TMPFILE))

/* Opens: read-only only. openat2 hides its flags behind a pointer BPF cannot read: ENOSYS
 * (glibc never needs it). creat always writes. */
static void hq_bpf_read_only_opens(hq_bpf *p)
{
    hq_bpf_on(p, __NR_openat2, HQ_ERRNO(ENOSYS));
#ifdef __NR_creat
    hq_bpf_on(p, __NR_creat, HQ_KILL);
#endif
    hq_bpf_allow_unless_bits(p, __NR_openat, 2, HQ_OPEN_WRITE_BITS);
#ifdef __NR_open
    hq_bpf_allow_unless_bits(p, __NR_open, 1, HQ_OPEN_WRITE_BITS);
#endif
}

/* TSYNC: a thread started earlier gets the filter too, or the install fails; either way
 * no thread escapes the layer. NO_NEW_PRIVS is set once by the runner beforehand. */
static int hq_bpf_install(hq_bpf *p)
{
    if (p->overflow)
        return -1;
    struct sock_fprog prog = {.len = (unsigned short)p->n, .filter = p->f};
    return syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog) == 0
               ? 0
               : -1;
}

/* Escape, network, other processes, kernel attack surface. */
static const uint32_t hq_layer1_deny[] = {
    __NR_socket, __NR_socketpair, __NR_connect, __NR_bind, __NR_listen, __NR_accept4,
    __NR_ptrace, __NR_process_vm_readv, __NR_process_vm_writev, __NR_keyctl, __NR_add_key,
    __NR_request_key, __NR_execve, __NR_execveat, __NR_unshare, __NR_setns, __NR_mount,
    __NR_umount2, __NR_pivot_root, __NR_chroot, __NR_bpf, __NR_perf_event_open,
    __NR_personality, __NR_userfaultfd, __NR_kcmp, __NR_pidfd_open, __NR_pidfd_getfd,
    __NR_pidfd_send_signal, __NR_io_uring_setup, __NR_io_uring_enter, __NR_io_uring_register,
    __NR_open_tree, __NR_move_mount, __NR_fsopen, __NR_fsconfig, __NR_fsmount, __NR_fspick,
    __NR_name_to_handle_at, __NR_open_by_handle_at, __NR_msgget, __NR_semget, __NR_shmget,
    __NR_tkill, __NR_rt_sigqueueinfo, __NR_rt_tgsigqueueinfo,
#ifdef __NR_fork
    __NR_fork,
#endif
#ifdef __NR_vfork
    __NR_vfork,
#endif
#ifdef __NR_accept
    __NR_accept,
#endif
};

/* Layer 1: the runner's own setup (mapping buffers, preloading libgomp and libm) runs
 * under it; no candidate code ever runs under layer 1 alone. */
static int hq_seccomp_layer1(pid_t self)
{
    hq_bpf p = {.n = 0};
    hq_bpf_prologue(&p);
    hq_bpf_on(&p, __NR_clone3, HQ_ERRNO(ENOSYS));
    hq_bpf_on(&p, __NR_sched_setaffinity, HQ_ERRNO(EPERM)); /* the judge owns pinning */
    for (size_t i = 0; i < sizeof hq_layer1_deny / sizeof hq_layer1_deny[0]; i++)
        hq_bpf_on(&p, hq_layer1_deny[i], HQ_KILL);
    hq_bpf_clone_threads_only(&p);
    hq_bpf_own_pid_only(&p, __NR_tgkill, (uint32_t)self);
    hq_bpf_own_pid_only(&p, __NR_kill, (uint32_t)self);
    hq_bpf_allow_unless_eq(&p, __NR_fcntl, 1, F_SETPIPE_SZ);
    hq_bpf_read_only_opens(&p);
    hq_bpf_ret(&p, HQ_ALLOW);
    return hq_bpf_install(&p);
}

/* Layer 2, the last filter: what loading the candidate (dlopen: read-only opens, mmap,
 * mprotect), a compute kernel, malloc, stdio to the output file and libgomp threads need.
 * It is installed BEFORE the candidate is loaded, so no candidate code (constructors,
 * IFUNC resolvers, libgcc's __cpu_indicator_init) ever runs where seccomp() is allowed:
 * a candidate cannot stack a filter of its own that fakes this one's installation.
 * libgomp (gcc 12, checked with strace): clone, rseq, set_robust_list, futex, mmap,
 * mprotect, munmap, madvise, rt_sigprocmask, rt_sigaction, sched_yield.
 * Not allowed, so fatal: seccomp, prctl, fcntl (F_SETPIPE_SZ included), ioctl, any open
 * for writing, signals to any other process. */
static const uint32_t hq_layer2_allow[] = {
    __NR_read, __NR_write, __NR_close, __NR_mmap, __NR_munmap, __NR_mprotect, __NR_mremap,
    __NR_brk, __NR_madvise, __NR_futex, __NR_clock_gettime, __NR_clock_getres,
    __NR_clock_nanosleep, __NR_nanosleep, __NR_gettimeofday, __NR_sched_yield, __NR_exit,
    __NR_exit_group, __NR_rt_sigreturn, __NR_rt_sigprocmask, __NR_rt_sigaction,
    __NR_sigaltstack, __NR_getpid, __NR_gettid, __NR_set_robust_list, __NR_rseq,
    __NR_sched_getaffinity, __NR_getrandom, __NR_fstat, __NR_newfstatat, __NR_membarrier,
    __NR_getrusage, __NR_restart_syscall, __NR_pread64, __NR_lseek,
#ifdef __NR_time
    __NR_time,
#endif
};

static int hq_seccomp_layer2(pid_t self)
{
    hq_bpf p = {.n = 0};
    hq_bpf_prologue(&p);
    hq_bpf_on(&p, __NR_clone3, HQ_ERRNO(ENOSYS));
    hq_bpf_on(&p, __NR_sched_setaffinity, HQ_ERRNO(EPERM));
    for (size_t i = 0; i < sizeof hq_layer2_allow / sizeof hq_layer2_allow[0]; i++)
        hq_bpf_on(&p, hq_layer2_allow[i], HQ_ALLOW);
    hq_bpf_read_only_opens(&p);
    hq_bpf_clone_threads_only(&p);
    hq_bpf_own_pid_only(&p, __NR_tgkill, (uint32_t)self);
    hq_bpf_own_pid_only(&p, __NR_kill, (uint32_t)self);
    hq_bpf_ret(&p, HQ_KILL);
    return hq_bpf_install(&p);
}

#endif
