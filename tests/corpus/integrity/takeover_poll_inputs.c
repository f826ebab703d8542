// expect: violation
// why: takes over the protocol and never returns from the first call: spins on the input buffer to start each product the moment new inputs appear, before GO, then reports DONE itself (never reading GO); the judge's clock starts before the inputs become visible, and the spinning shows as a thread running between calls
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

static int go_fd = -1, done_fd = -1;

static int number(const char **p)
{
    int v = 0;
    for (; **p >= '0' && **p <= '9'; (*p)++)
        v = v * 10 + (**p - '0');
    return v;
}

static void find_fds(void)
{
    volatile char here = 0;
    const char *p = (const char *)&here;
    for (long i = 0; i < (1L << 22); i++, p++)
        if (p[0] == 'h' && p[1] == 'q' && p[2] == '1' && p[3] == 0) {
            const char *q = p + 4;
            go_fd = number(&q);
            q++;
            done_fd = number(&q);
            return;
        }
}

static void multiply(int M, int N, int K, const double *A, const double *B, double *C)
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

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    long (*wr)(int, const void *, size_t) = (long (*)(int, const void *, size_t))libc_function("write");
    find_fds();
    if (!wr || done_fd < 3) {
        multiply(M, N, K, A, B, C);
        return;
    }
    uint32_t done[2] = {0x71637068u, 3};
    for (;;) { /* the same shape every time from here on: a guess that is good enough */
        multiply(M, N, K, A, B, C);
        wr(done_fd, done, sizeof done);
        double first = *(volatile const double *)A;
        while (*(volatile const double *)A == first)
            ; /* the next inputs are on their way */
    }
}
