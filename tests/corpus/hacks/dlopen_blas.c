// expect: violation
// sandbox: runtime_error
// why: loads OpenBLAS at run time with dlopen/dlsym to dodge a link-time symbol check
#include <dlfcn.h>

typedef void (*gemm_fn)(int, int, int, int, int, int, double, const double *, int,
                        const double *, int, double, double *, int);

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    static gemm_fn fn;
    if (!fn) {
        void *h = dlopen("libopenblas.so.0", RTLD_NOW);
        if (!h)
            h = dlopen("libblas.so.3", RTLD_NOW);
        fn = (gemm_fn)dlsym(h, "cblas_dgemm");
    }
    fn(101, 111, 111, M, N, K, 1.0, A, K, B, N, 0.0, C, N);
}
