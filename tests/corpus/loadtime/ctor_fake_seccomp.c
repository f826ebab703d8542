// expect: violation
// why: a constructor that stacks a seccomp filter of its own answering ERRNO(0) to seccomp(), so that the runner's strict layer, installed later, would "succeed" without existing; it finds syscall() in libc at run time (no undefined symbol names it); the runner's last layer is in force before anything of the candidate is loaded and kills seccomp()
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/syscall.h>
/* Finds a libc function at run time without naming it: from memcpy (an allowed symbol)
 * walk back page by page to libc's ELF header, then read its dynamic symbol table. No
 * symbol of the object names the function, so an allow-list of symbols cannot see it. */
#include <elf.h>
#include <stdint.h>
#include <string.h>

static int same(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

static void *libc_function(const char *name)
{
    void *(*volatile anchor)(void *, const void *, size_t) = memcpy;
    uintptr_t base = (uintptr_t)anchor & ~(uintptr_t)4095;
    while (memcmp((const void *)base, ELFMAG, SELFMAG) != 0)
        base -= 4096;
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)base;
    const Elf64_Phdr *ph = (const Elf64_Phdr *)(base + eh->e_phoff);
    const Elf64_Dyn *dyn = 0;
    for (int i = 0; i < eh->e_phnum; i++)
        if (ph[i].p_type == PT_DYNAMIC)
            dyn = (const Elf64_Dyn *)(base + ph[i].p_vaddr);
    const Elf64_Sym *sym = 0;
    const char *str = 0;
    for (; dyn && dyn->d_tag != DT_NULL; dyn++) {
        uintptr_t v = dyn->d_un.d_ptr < base ? base + dyn->d_un.d_ptr : dyn->d_un.d_ptr;
        if (dyn->d_tag == DT_SYMTAB)
            sym = (const Elf64_Sym *)v;
        if (dyn->d_tag == DT_STRTAB)
            str = (const char *)v;
    }
    for (const Elf64_Sym *s = sym; s && (const char *)s < str; s++)
        if (s->st_value && ELF64_ST_TYPE(s->st_info) == STT_FUNC && same(str + s->st_name, name))
            return (void *)(base + s->st_value);
    return 0;
}

__attribute__((constructor)) static void fake_the_sandbox(void)
{
    long (*sc)(long, ...) = (long (*)(long, ...))libc_function("syscall");
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_seccomp, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {4, f};
    if (sc)
        sc(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++)
            C[i * N + j] = 0.0;
        for (int k = 0; k < K; k++) {
            double a = A[i * K + k];
            for (int j = 0; j < N; j++)
                C[i * N + j] += a * B[k * N + j];
        }
    }
}
