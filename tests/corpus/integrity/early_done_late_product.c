// expect: violation
// why: early_done made deterministic: reports DONE first, then waits ~5 ms before computing, so the judge's snapshot always holds an unfinished C (a wrong result); the runner's own DONE that follows the late product shows the DONE was forged
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

static int done_fd = -1;

/* argv strings sit at the top of the stack: "... hq1 GO_FD DONE_FD ..." */
static void find_done_fd(void)
{
    volatile char here = 0;
    const char *p = (const char *)&here;
    for (long i = 0; i < (1L << 22); i++, p++)
        if (p[0] == 'h' && p[1] == 'q' && p[2] == '1' && p[3] == 0) {
            const char *go = p + 4, *done = go;
            while (*done)
                done++;
            done_fd = 0;
            for (done++; *done >= '0' && *done <= '9'; done++)
                done_fd = done_fd * 10 + (*done - '0');
            return;
        }
}

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    long (*wr)(int, const void *, size_t) = (long (*)(int, const void *, size_t))libc_function("write");
    if (done_fd < 0)
        find_done_fd();
    uint32_t msg[2] = {0x71637068u, 3}; /* HQ_MAGIC, HQ_DONE */
    if (wr && done_fd > 2)
        wr(done_fd, msg, sizeof msg);
    for (volatile long spin = 0; spin < 5000000; spin++) /* ~5 ms: the snapshot comes first */
        ;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += A[i * K + k] * B[k * N + j];
            C[i * N + j] = s;
        }
}
