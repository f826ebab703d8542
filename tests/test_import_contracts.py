"""The import contracts of pyproject.toml (`make lint` runs lint-imports) hold for this
tree, and they can fail: a copy of the packages with one violation injected breaks the
contract that forbids it, and the report names the import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports on the packages under `root`, with `root`'s pyproject.toml."""
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: pip install -e '.[dev]'", pytrace=False)
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(root / "pyproject.toml")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},  # the copy, not the installed tree
    )


def test_the_tree_keeps_every_contract() -> None:
    out = lint_imports(REPO)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert " kept, 0 broken." in out.stdout, out.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("eval/reward.py", "import bridges", "hpcq.eval.reward -> bridges"),
        ("eval/reward.py", "import torch", "hpcq.eval.reward -> torch"),
        (
            "cli/pipeline.py",
            "from tests.support.scripted import ScriptedEvaluator",
            "hpcq.cli.pipeline -> tests",
        ),
        (
            "eval/reward.py",
            "from hpcq.pipeline import messages",
            "hpcq.eval.reward -> hpcq.pipeline.messages",
        ),
        ("errors.py", "from hpcq.cli import common", "hpcq.errors -> hpcq.cli.common"),
    ],
    ids=["core->bridges", "core->torch", "core->tests", "eval->pipeline", "shared->cli"],
)
def test_an_injected_violation_breaks_its_contract(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    for package in ("hpcq", "bridges"):
        shutil.copytree(
            REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    target = tmp_path / "hpcq" / module
    # Inside a function, as the lazy imports of the core are: they count all the same.
    target.write_text(target.read_text() + f"\n\ndef _injected() -> None:\n    {line}\n")
    out = lint_imports(tmp_path)
    assert out.returncode != 0, out.stdout[-3000:]
    assert "BROKEN" in out.stdout and broken in out.stdout, out.stdout[-3000:]
