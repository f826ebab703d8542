"""The candidate's own lines of real `gcc -E` output (hpcq.eval.csource.preprocess).

`preprocessed` runs gcc -E with the engine's flags, unsandboxed, on `cand.c` in a fresh
directory; the technique tests import it too.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from hpcq.eval.csource.preprocess import MAX_LINE, line_control, own_lines
from hpcq.eval.techniques import detect

CFLAGS = ("-O3", "-march=native", "-fopenmp")


def gcc_e(tmp_path: Path, source: str) -> str:
    """`gcc -E` of `source` saved as cand.c in tmp_path, linemarkers kept."""
    (tmp_path / "cand.c").write_text(source)
    done = subprocess.run(
        ["gcc", "-E", *CFLAGS, "cand.c"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def preprocessed(tmp_path: Path, source: str) -> str:
    """The candidate's own lines of its gcc -E output, as the engine gives them to detect."""
    return own_lines(gcc_e(tmp_path, source))


SOURCE = """#include <stdlib.h>
#include <immintrin.h>
#define BS 64
#define MIN(a, b) ((a) < (b) ? (a) : (b))

void dgemm(int M, int N, int K, const double *A, const double *B, double *C)
{
    for (int ii = 0; ii < M; ii += BS)
        for (int i = ii; i < MIN(ii + BS, M); i++)
            C[i] = A[i] * B[i];
#if 0
    __m256d hidden = _mm256_setzero_pd();
#endif
}
"""


def test_own_lines_keep_original_line_numbers(tmp_path: Path) -> None:
    lines = preprocessed(tmp_path, SOURCE).split("\n")
    original = SOURCE.split("\n")
    for number in (6, 7, 10):  # unchanged by the preprocessor
        assert lines[number - 1].strip() == original[number - 1].strip()
    assert lines[7].strip() == "for (int ii = 0; ii < M; ii += 64)"
    assert "((ii + 64) < (M) ? (ii + 64) : (M))" in lines[8]


def test_own_lines_drop_headers_directives_and_disabled_code(tmp_path: Path) -> None:
    own = preprocessed(tmp_path, SOURCE)
    assert "extern" not in own and "__inline" not in own  # stdlib.h and immintrin.h
    assert "#define" not in own and "#include" not in own
    assert "hidden" not in own
    assert len(own.split("\n")) <= len(SOURCE.split("\n")) + 1
    assert detect(own) == {"cache_blocking": "line 8: for (int ii = 0; ii < M; ii += 64)"}


def test_pragma_from_a_macro_shares_its_line(tmp_path: Path) -> None:
    src = (
        "#define STR(x) #x\n#define P(x) _Pragma(STR(x))\n"
        'P(GCC optimize("unroll-loops")) int k = 0;\n'
        "void f(double *c, int n) {\n"
        "    for (int i = 0; i < n; i++) P(omp simd) for (int j = 0; j < n; j++) c[j] += 1;\n"
        "}\n"
    )
    lines = preprocessed(tmp_path, src).split("\n")
    assert lines[2] == '_Pragma("GCC optimize(\\"unroll-loops\\")") int k = 0;'
    assert '_Pragma("omp simd") for (int j' in lines[4]
    found = detect("\n".join(lines))
    assert set(found) == {"simd", "loop_unrolling"}
    assert found["simd"].startswith("line 5: ")


def test_self_inclusion_is_own_text(tmp_path: Path) -> None:
    src = "#ifndef ONCE\n#define ONCE\n#include __FILE__\n#else\nint secret_mm = 1;\n#endif\n"
    assert preprocessed(tmp_path, src).split("\n")[4] == "int secret_mm = 1;"


def test_line_directive_keeps_ownership(tmp_path: Path) -> None:
    src = 'int a;\n#line 40 "/usr/include/stdio.h"\nint renamed;\n'
    own = preprocessed(tmp_path, src)
    assert own.split("\n")[39] == "int renamed;"
    assert line_control(src) == 'line 2: #line 40 "/usr/include/stdio.h"'


def test_forged_include_marker_is_flagged(tmp_path: Path) -> None:
    src = 'int a;\n# 1 "/usr/include/stdio.h" 1 3 4\nint hidden;\n'
    assert "hidden" not in preprocessed(tmp_path, src)  # gcc attributes it to stdio.h
    assert line_control(src) == 'line 2: # 1 "/usr/include/stdio.h" 1 3 4'


def test_line_control_spellings() -> None:
    assert line_control("int a;\n  %: /* c */ li\\\nne 5\n") == "line 2: %: /* c */ li\\"
    assert line_control('int a; \\\n\n#\\\n 7 "x"\n') == "line 3: #\\"
    assert line_control("#include <stdio.h>\n#pragma omp parallel\n#define L 1\n") is None
    assert line_control('/* #line 1 "x" */\nconst char *s = "\\n#line 2";\n') is None


def test_markers_parsed_by_hand() -> None:
    text = (
        '# 0 "cand.c"\n# 0 "<built-in>"\nbuiltin stuff\n# 1 "cand.c"\nint a;\n'
        '# 1 "/usr/include/x.h" 1 3 4\nint header;\n# 3 "cand.c" 2\nint b;\n'
        '# 1 "odd \\"name\\".h" 1\nint c;\n# 4 "cand.c" 2\n'
        f'# {MAX_LINE * 4} "cand.c"\nint far;\n'
    )
    lines = own_lines(text).split("\n")
    assert lines[:3] == ["int a;", "", "int b;"]
    assert "header" not in own_lines(text) and "builtin" not in own_lines(text)
    assert "int c" not in own_lines(text)
    assert len(lines) == MAX_LINE + 1 and lines[MAX_LINE - 1] == "int far;"
    assert own_lines("no markers at all\n") == "no markers at all\n"


def test_own_lines_linear_on_large_output() -> None:
    header = '# 1 "/usr/include/big.h" 1 3 4\n' + "extern int x;\n" * 200_000 + '# 2 "cand.c" 2\n'
    own = "".join(f'# {k} "cand.c"\nint v{k};\n' for k in range(1, 20_000))
    text = '# 1 "cand.c"\n' + header + own + "x\n" * 500_000
    start = time.process_time()
    out = own_lines(text)
    assert time.process_time() - start < 5.0
    lines = out.split("\n")
    assert lines[0] == "int v1;" and lines[19_998] == "int v19999;" and lines[19_999] == "x"
    assert "extern" not in out
