"""The training core stays torch-free: the loop, the settings and the CLI registration
import no ML framework and no bridge until a training command runs."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("torch", "transformers", "trl", "vllm", "peft", "tokenizers", "bridges")
MODULES = (
    "hpcq.advantages", "hpcq.checkpoint", "hpcq.extract", "hpcq.grpo", "hpcq.metrics",
    "hpcq.policy", "hpcq.prompts", "hpcq.rollout", "hpcq.run_report", "hpcq.train_settings",
    "hpcq.variants", "hpcq.cli_train",
)  # fmt: skip


def test_training_core_imports_no_ml_framework() -> None:
    code = (
        "import sys\n"
        f"for m in {MODULES!r}: __import__(m)\n"
        "from hpcq.cli_train import parser_with_training\n"
        "parser_with_training().parse_args(['producer', '--run-dir', 'x'])\n"
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported {out.stdout.strip()}"
