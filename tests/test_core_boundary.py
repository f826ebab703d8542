"""The core installs and runs without the ML stack (DESIGN.md, Boundaries)."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("torch", "transformers", "trl", "vllm", "aiomqtt", "bridges")


def test_core_imports_no_ml_framework() -> None:
    modules = [
        "hpcq.cli", "hpcq.engine", "hpcq.static_checks", "hpcq.harness", "hpcq.sandbox",
    ]  # fmt: skip
    for optional in ("hpcq.consumer", "hpcq.producer", "hpcq.codec"):
        try:
            __import__(optional)
            modules.append(optional)
        except ImportError:
            pass
    code = (
        "import sys\n"
        f"for m in {modules!r}: __import__(m)\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imported {out.stdout.strip()}"


def test_kernels_is_not_an_importable_package() -> None:
    from hpcq.problems import default_kernels_dir

    assert not (default_kernels_dir() / "__init__.py").exists()
