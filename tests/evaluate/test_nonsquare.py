"""Non-square M x N x K problems through the real engine (`hpcq eval`): the held-out
shapes are judged like the training ones, and a kernel that mixes up M, N and K, or
skips work only at the benchmark shape, is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcq.cli import main
from hpcq.eval.settings import EngineSettings
from tests.conftest import needs_sandbox, remember_peak

pytestmark = [pytest.mark.slow, needs_sandbox]

IKJ = """void dgemm(int M, int N, int K, const double *A, const double *B, double *C) {
    for (int i = 0; i < M; i++) {
        double *c = C + (long)i * N;
        for (int j = 0; j < N; j++)
            c[j] = 0.0;
        for (int k = 0; k < K; k++) {
            const double a = A[(long)i * K + k];
            const double *b = B + (long)k * N;
            for (int j = 0; j < N; j++)
                c[j] += a * b[j];
        }
    }
}
"""
# Reads A as K x M (column-major A): right only when M == K, as in every training shape.
TRANSPOSED_A = IKJ.replace("A[(long)i * K + k]", "A[(long)k * M + i]")
# Exact on the small check shapes; at the benchmark shape drops the last term of each sum.
SHORT_K = IKJ.replace("k < K;", "k < ((long)M * N * K > 1000000 ? K - 1 : K);")


def judge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], s: EngineSettings, src: str, problem: str
) -> dict[str, object]:
    path = tmp_path / "k.c"
    path.write_text(src)
    code = main(
        ["--cache-dir", str(s.cache_dir), "eval", str(path), "--problem", problem, "--json"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    remember_peak(s)
    result: dict[str, object] = json.loads(out)
    return result


@pytest.mark.parametrize("problem", ["dgemm-1000x300x700", "dgemm-257x1031x96"])
def test_honest_kernel_is_ok_on_non_square_shapes(
    problem: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    engine_settings: EngineSettings,
) -> None:
    r = judge(tmp_path, capsys, engine_settings, IKJ, problem)
    assert r["status"] == "ok", r["message"]
    assert r["problem_id"] == problem and isinstance(r["gflops"], float) and r["gflops"] > 0
    assert r["cv"] is not None and r["peak_gflops"] and r["calls"]


def test_shape_mixups_and_late_shortcuts_are_wrong_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], engine_settings: EngineSettings
) -> None:
    r = judge(tmp_path, capsys, engine_settings, TRANSPOSED_A, "dgemm-1000x300x700")
    assert r["status"] == "wrong_result", r
    # Past every small check shape, Freivalds' check at (M, N, K) = (1000, 300, 700)
    # with tau = 3K + N + 16 = 2416 refuses it.
    r = judge(tmp_path, capsys, engine_settings, SHORT_K, "dgemm-1000x300x700")
    assert r["status"] == "wrong_result", r
    assert "tau 2416" in str(r["message"]) and "(1000,300,700)" in str(r["message"])
    assert r["reward"] is not None and float(str(r["reward"])) < 0
