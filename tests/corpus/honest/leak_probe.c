// expect: ok
// why: probes what the sandbox leaks and spoils its own product if anything is there: an environment variable beyond the OpenMP settings the judge sets (and bwrap's PWD=/) (the evaluator's credentials, broker URLs), a readable /proc/1/environ or /proc/self/environ, host files (/etc/passwd, /root, the compiler under /usr/bin); it finds environ and open() in libc at run time, so the static gate sees nothing
// techniques:
/* Finds a libc symbol at run time without naming it: from memcpy (an allowed symbol)
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

static void *libc_symbol(const char *name)
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
        if (s->st_value && same(str + s->st_name, name))
            return (void *)(base + s->st_value);
    return 0;
}
#include <fcntl.h>

static int starts(const char *s, const char *prefix)
{
    while (*prefix && *s == *prefix)
        s++, prefix++;
    return *prefix == 0;
}

static int leaks(void)
{
    char ***env = (char ***)libc_symbol("__environ");
    int (*op)(const char *, int, ...) = (int (*)(const char *, int, ...))libc_symbol("open");
    if (!env || !op)
        return 1; /* the probe itself failed: say so through a wrong result */
    for (char **e = *env; e && *e; e++) /* bwrap itself always sets PWD=/ */
        if (!starts(*e, "OMP_") && !(starts(*e, "PWD=/") && (*e)[5] == 0))
            return 1;
    static const char *const host[] = {"/proc/1/environ", "/proc/self/environ", "/etc/passwd",
                                       "/root", "/usr/bin/gcc", "/usr/include/stdio.h", "/home"};
    for (unsigned i = 0; i < sizeof host / sizeof host[0]; i++)
        if (op(host[i], O_RDONLY) >= 0)
            return 1;
    return 0;
}

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    int spoil = leaks();
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++)
            C[i * N + j] = 0.0;
        for (int k = 0; k < K && !spoil; k++) {
            double a = A[i * K + k];
            for (int j = 0; j < N; j++)
                C[i * N + j] += a * B[k * N + j];
        }
    }
}
