// expect: compile_error
// why: a preprocessor bomb: the file includes itself twice per level (2^depth copies); the source reaches gcc on stdin, so there is no file to include, and include depth, CPU and output are capped anyway
#ifndef DEPTH
#define DEPTH 0
#endif
#if DEPTH < 40
#include __FILE__
#include __FILE__
#include "cand.c"
#include "./cand.c"
#endif
void dgemm(int M, int N, int K, const double *A, const double *B, double *C) { (void)M, (void)N, (void)K, (void)A, (void)B, (void)C; }
