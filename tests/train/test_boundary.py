"""The training core stays torch-free: the loop, the settings and the CLI registration
import no ML framework and no bridge until a training command runs."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("torch", "transformers", "trl", "vllm", "peft", "tokenizers")
MODULES = (
    "hpcq.train.advantages", "hpcq.train.checkpoint", "hpcq.train.extract", "hpcq.train.loop",
    "hpcq.train.metrics", "hpcq.train.policy", "hpcq.train.prompts", "hpcq.train.rollout",
    "hpcq.train.report", "hpcq.train.settings", "bridges.bootstrap_variants", "bridges.commands",
)  # fmt: skip


def test_training_core_imports_no_ml_framework() -> None:
    code = (
        "import sys\n"
        f"for m in {MODULES!r}: __import__(m)\n"
        "from bridges.cli_train import parser_with_training\n"
        "parser_with_training().parse_args(['producer', '--run-dir', 'x'])\n"
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported {out.stdout.strip()}"
