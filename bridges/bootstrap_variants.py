"""DGEMM variants written from templates: the corpus of the self-built bootstrap model.

A random model writes no C, and no model weights can be downloaded on the project's
machines, so `hpcq bootstrap-model` teaches a small model from kernels generated here:
loop orders, cache blocking, register tiles, packing, unrolling (pragma or by hand),
vector pragmas and OpenMP. Every variant is correct for any M, N, K >= 1 (remainders
included) and declares its techniques (`Variant.techniques`, from the family's entry in
FAMILY_TECHNIQUES and the pragmas it carries); the tests check that
`hpcq.eval.techniques.detect` finds exactly those, on the source and on its `gcc -E` output,
so a corpus sample conditioned on a stage's constraints never teaches a violation.

The variants differ in speed by an order of magnitude (a naive ijk loop against a
four-row ikj kernel): that spread is what GRPO with GFLOPS rewards has to discover.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

from hpcq.eval import techniques as tq
from hpcq.outcome import Constraints

SIGNATURE = "void dgemm(int M, int N, int K, const double *A, const double *B, double *C)"

FAMILIES: tuple[str, ...] = ("ijk", "ikj", "blocked", "rows4", "tile4x4", "packed", "unroll4")
"""ijk: dot product per element (B read by column); ikj: row updates (unit stride);
blocked: ikj over cache tiles; rows4: four rows of C updated per B row (register reuse);
tile4x4: a 4x4 tile of C in 16 scalar accumulators; packed: B transposed into a buffer,
then unit-stride dot products; unroll4: ikj with the j loop unrolled by hand."""


FAMILY_TECHNIQUES: dict[str, frozenset[str]] = {
    "ijk": frozenset(),
    "ikj": frozenset(),
    "blocked": frozenset({"cache_blocking"}),
    "rows4": frozenset(),  # C rows updated in memory: no register accumulators
    "tile4x4": frozenset({"register_blocking"}),
    "packed": frozenset({"packing"}),
    "unroll4": frozenset({"loop_unrolling"}),
}
"""What each family's template does by construction, before any pragma is added."""


@dataclass(frozen=True)
class Variant:
    family: str
    block: int = 0  # tile edge of `blocked` (elements)
    unroll_pragma: int = 0  # `#pragma GCC unroll U` on the innermost loop, 0: none
    vector_pragma: str = ""  # "", "omp simd" or "GCC ivdep" on the innermost loop
    openmp: bool = False  # `#pragma omp parallel for` on the outermost loop

    def source(self) -> str:
        return _render(self)

    def techniques(self) -> frozenset[str]:
        """The techniques this variant uses by declaration: its family's, `loop_unrolling`
        for an unroll pragma, `simd` for a vector pragma, `openmp` for the parallel for."""
        extra = {
            "loop_unrolling": bool(self.unroll_pragma),
            "simd": bool(self.vector_pragma),
            "openmp": self.openmp,
        }
        return FAMILY_TECHNIQUES[self.family] | {name for name, used in extra.items() if used}


@dataclass(frozen=True)
class Labelled:
    variant: Variant
    source: str
    techniques: frozenset[str]  # as declared (Variant.techniques)


def _inner_pragmas(v: Variant, indent: str, reduction: str = "") -> list[str]:
    lines = []
    if v.vector_pragma == "omp simd":
        lines.append(f"{indent}#pragma omp simd{reduction}")
    elif v.vector_pragma:
        lines.append(f"{indent}#pragma {v.vector_pragma}")
    if v.unroll_pragma:
        lines.append(f"{indent}#pragma GCC unroll {v.unroll_pragma}")
    return lines


def _outer(v: Variant) -> list[str]:
    return ["    #pragma omp parallel for"] if v.openmp else []


def _zero_c() -> list[str]:
    return ["    for (int i = 0; i < M * N; i++) {", "        C[i] = 0.0;", "    }"]


def _ijk(v: Variant) -> list[str]:
    return [
        *_outer(v),
        "    for (int i = 0; i < M; i++) {",
        "        for (int j = 0; j < N; j++) {",
        "            double sum = 0.0;",
        *_inner_pragmas(v, "            ", " reduction(+:sum)"),
        "            for (int k = 0; k < K; k++) {",
        "                sum += A[i * K + k] * B[k * N + j];",
        "            }",
        "            C[i * N + j] = sum;",
        "        }",
        "    }",
    ]


def _ikj(v: Variant) -> list[str]:
    return [
        *_outer(v),
        "    for (int i = 0; i < M; i++) {",
        "        for (int j = 0; j < N; j++) {",
        "            C[i * N + j] = 0.0;",
        "        }",
        "        for (int k = 0; k < K; k++) {",
        "            double a = A[i * K + k];",
        *_inner_pragmas(v, "            "),
        "            for (int j = 0; j < N; j++) {",
        "                C[i * N + j] += a * B[k * N + j];",
        "            }",
        "        }",
        "    }",
    ]


def _blocked(v: Variant) -> list[str]:
    return [
        *_zero_c(),
        *_outer(v),
        f"    for (int ii = 0; ii < M; ii += {v.block}) {{",
        f"        int i_end = ii + {v.block} < M ? ii + {v.block} : M;",
        f"        for (int kk = 0; kk < K; kk += {v.block}) {{",
        f"            int k_end = kk + {v.block} < K ? kk + {v.block} : K;",
        f"            for (int jj = 0; jj < N; jj += {v.block}) {{",
        f"                int j_end = jj + {v.block} < N ? jj + {v.block} : N;",
        "                for (int i = ii; i < i_end; i++) {",
        "                    for (int k = kk; k < k_end; k++) {",
        "                        double a = A[i * K + k];",
        *_inner_pragmas(v, "                        "),
        "                        for (int j = jj; j < j_end; j++) {",
        "                            C[i * N + j] += a * B[k * N + j];",
        "                        }",
        "                    }",
        "                }",
        "            }",
        "        }",
        "    }",
    ]


def _rows4(v: Variant) -> list[str]:
    return [
        *_zero_c(),
        "    int m4 = M - M % 4;",
        *_outer(v),
        "    for (int i = 0; i < m4; i += 4) {",
        "        for (int k = 0; k < K; k++) {",
        "            double a0 = A[(i + 0) * K + k];",
        "            double a1 = A[(i + 1) * K + k];",
        "            double a2 = A[(i + 2) * K + k];",
        "            double a3 = A[(i + 3) * K + k];",
        "            const double *b = B + k * N;",
        *_inner_pragmas(v, "            "),
        "            for (int j = 0; j < N; j++) {",
        "                C[(i + 0) * N + j] += a0 * b[j];",
        "                C[(i + 1) * N + j] += a1 * b[j];",
        "                C[(i + 2) * N + j] += a2 * b[j];",
        "                C[(i + 3) * N + j] += a3 * b[j];",
        "            }",
        "        }",
        "    }",
        "    for (int i = m4; i < M; i++) {",
        "        for (int k = 0; k < K; k++) {",
        "            double a = A[i * K + k];",
        "            for (int j = 0; j < N; j++) {",
        "                C[i * N + j] += a * B[k * N + j];",
        "            }",
        "        }",
        "    }",
    ]


def _tile4x4(v: Variant) -> list[str]:
    acc = [f"c{r}{c}" for r in range(4) for c in range(4)]
    body = [
        *_outer(v),
        "    for (int i = 0; i < m4; i += 4) {",
        "        for (int j = 0; j < n4; j += 4) {",
        *[f"            double {a} = 0.0;" for a in acc],
        *_inner_pragmas(v, "            "),
        "            for (int k = 0; k < K; k++) {",
        *[f"                double a{r} = A[(i + {r}) * K + k];" for r in range(4)],
        *[f"                double b{c} = B[k * N + j + {c}];" for c in range(4)],
        *[f"                c{r}{c} += a{r} * b{c};" for r in range(4) for c in range(4)],
        "            }",
        *[f"            C[(i + {r}) * N + j + {c}] = c{r}{c};" for r in range(4) for c in range(4)],
        "        }",
        "    }",
    ]
    edge = [
        "    for (int i = 0; i < M; i++) {",
        "        for (int j = (i < m4 ? n4 : 0); j < N; j++) {",
        "            double sum = 0.0;",
        "            for (int k = 0; k < K; k++) {",
        "                sum += A[i * K + k] * B[k * N + j];",
        "            }",
        "            C[i * N + j] = sum;",
        "        }",
        "    }",
    ]
    return ["    int m4 = M - M % 4;", "    int n4 = N - N % 4;", *body, *edge]


def _packed(v: Variant) -> list[str]:
    return [
        "    double *Bt = (double *)malloc((size_t)K * N * sizeof(double));",
        "    for (int k = 0; k < K; k++) {",
        "        for (int j = 0; j < N; j++) {",
        "            Bt[j * K + k] = B[k * N + j];",
        "        }",
        "    }",
        *_outer(v),
        "    for (int i = 0; i < M; i++) {",
        "        for (int j = 0; j < N; j++) {",
        "            double sum = 0.0;",
        *_inner_pragmas(v, "            ", " reduction(+:sum)"),
        "            for (int k = 0; k < K; k++) {",
        "                sum += A[i * K + k] * Bt[j * K + k];",
        "            }",
        "            C[i * N + j] = sum;",
        "        }",
        "    }",
        "    free(Bt);",
    ]


def _unroll4(v: Variant) -> list[str]:
    return [
        "    int n4 = N - N % 4;",
        *_outer(v),
        "    for (int i = 0; i < M; i++) {",
        "        for (int j = 0; j < N; j++) {",
        "            C[i * N + j] = 0.0;",
        "        }",
        "        for (int k = 0; k < K; k++) {",
        "            double a = A[i * K + k];",
        *_inner_pragmas(v, "            "),
        "            for (int j = 0; j < n4; j += 4) {",
        "                C[i * N + j] += a * B[k * N + j];",
        "                C[i * N + j + 1] += a * B[k * N + j + 1];",
        "                C[i * N + j + 2] += a * B[k * N + j + 2];",
        "                C[i * N + j + 3] += a * B[k * N + j + 3];",
        "            }",
        "            for (int j = n4; j < N; j++) {",
        "                C[i * N + j] += a * B[k * N + j];",
        "            }",
        "        }",
        "    }",
    ]


_BODIES = {
    "ijk": _ijk,
    "ikj": _ikj,
    "blocked": _blocked,
    "rows4": _rows4,
    "tile4x4": _tile4x4,
    "packed": _packed,
    "unroll4": _unroll4,
}


def _render(v: Variant) -> str:
    head = ["#include <stdlib.h>", ""] if v.family == "packed" else []
    return "\n".join([*head, SIGNATURE + " {", *_BODIES[v.family](v), "}", ""])


def all_variants() -> Iterator[Variant]:
    """Every combination the templates support (a few hundred)."""
    for family in FAMILIES:
        blocks = (32, 64, 128) if family == "blocked" else (0,)
        # OpenMP needs a canonical outer loop; tile4x4 and rows4 have one too.
        for block, unroll, vec, omp in itertools.product(
            blocks, (0, 4, 8), ("", "omp simd", "GCC ivdep"), (False, True)
        ):
            if unroll and vec == "omp simd":
                continue  # gcc: `omp simd` must be followed by the loop itself
            yield Variant(family, block, unroll, vec, omp)


@cache
def labelled_variants() -> tuple[Labelled, ...]:
    """All variants with their sources and declared techniques (computed once)."""
    return tuple(Labelled(v, v.source(), v.techniques()) for v in all_variants())


def allowed(constraints: Constraints) -> list[Labelled]:
    """The variants that satisfy a stage's constraints."""
    return [
        x
        for x in labelled_variants()
        if not (x.techniques & constraints.forbidden) and constraints.required <= x.techniques
    ]


def sample_constraints(rng: random.Random) -> Constraints:
    """Constraints like a stage's: often none, some techniques forbidden, a few required.
    Resampled until at least one variant satisfies them."""
    while True:
        if rng.random() < 0.3:
            c = Constraints()
        else:
            forbidden = frozenset(t for t in tq.CATALOGUE if rng.random() < 0.3)
            rest = [t for t in tq.CATALOGUE if t not in forbidden]
            required = frozenset(t for t in rest if rng.random() < 0.15)
            c = Constraints(forbidden=forbidden, required=required)
        if allowed(c):
            return c
