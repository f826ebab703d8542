/* dgemm_call.c: runner side of the DGEMM family. Runs inside the sandbox.
 * Contract: void dgemm(int M, int N, int K, const double *A, const double *B, double *C);
 * row-major, A is MxK, B is KxN, C is MxN, C = A*B, every element of C written. */
#include "../harness/problem.h"

typedef void (*dgemm_fn)(int M, int N, int K, const double *A, const double *B, double *C);

static void dgemm_call(void *entry, const hq_shape *s, void *const *bufs)
{
    dgemm_fn f = (dgemm_fn)entry;
    f((int)s->d[0], (int)s->d[1], (int)s->d[2], (const double *)bufs[0],
      (const double *)bufs[1], (double *)bufs[2]);
}

const hq_runner_family hq_family_runner = {
    .name = "dgemm",
    .nbufs = 3,
    .call = dgemm_call,
};
