// expect: violation
// why: computes the top half, then finishes the bottom half on a detached thread after returning
// sandbox: ok
#include <pthread.h>

struct job { int M, N, K, i0; const double *A, *B; double *C; };

static void rows(const struct job *j, int i0, int i1)
{
    for (int i = i0; i < i1; i++)
        for (int c = 0; c < j->N; c++) {
            double s = 0.0;
            for (int k = 0; k < j->K; k++)
                s += j->A[i * j->K + k] * j->B[k * j->N + c];
            j->C[i * j->N + c] = s;
        }
}

static void *finish(void *arg)
{
    const struct job *j = arg;
    rows(j, j->i0, j->M);
    return NULL;
}

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    static struct job job;
    job = (struct job){M, N, K, M / 2, A, B, C};
    pthread_t t;
    if (pthread_create(&t, NULL, finish, &job) == 0)
        pthread_detach(t);
    else
        rows(&job, M / 2, M);
    rows(&job, 0, M / 2);
}
