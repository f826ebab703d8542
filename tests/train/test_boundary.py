"""The consumer and the training core stay torch-free at run time (DESIGN.md, Boundaries):
importing them, and the ML side's command registration, loads no ML framework until a
training command runs. What hpcq may import is checked statically by import-linter
(`make lint`); this is the runtime proof."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("torch", "transformers", "trl", "vllm", "peft", "tokenizers")

_PROBE = f"""
import pkgutil, sys
import hpcq.pipeline.consumer, hpcq.train
for m in pkgutil.walk_packages(hpcq.train.__path__, "hpcq.train."):
    __import__(m.name)
import bridges.bootstrap_variants, bridges.commands
from bridges.cli_train import parser_with_training
parser_with_training().parse_args(["producer", "--run-dir", "x"])
print(",".join(m for m in {FORBIDDEN!r} if m in sys.modules))
"""


def test_consumer_and_training_core_import_no_ml_framework() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "", f"imported {out.stdout.strip()}"
