// expect: violation
// why: a constructor starts a thread (pthread_create found in libc at run time) that waits a few milliseconds and then opens a socket: the process dies by seccomp at a moment of its choosing, also just after it reported READY, while the judge inspects it from outside; a runner that vanishes there must be named a violation, never an unpenalised infra_error
// cores: 2
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
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

static void *later(void *unused)
{
    (void)unused;
    int (*nap)(const struct timespec *, struct timespec *) =
        (int (*)(const struct timespec *, struct timespec *))libc_function("nanosleep");
    int (*sock)(int, int, int) = (int (*)(int, int, int))libc_function("socket");
    struct timespec t = {0, 2000000};
    if (nap)
        nap(&t, 0);
    if (sock)
        sock(AF_INET, SOCK_STREAM, 0);
    return 0;
}

__attribute__((constructor)) static void start(void)
{
    int (*spawn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *) =
        (int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))libc_function(
            "pthread_create");
    pthread_t t;
    if (spawn)
        spawn(&t, 0, later, 0);
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
