#!/usr/bin/env bash
# The GPU check (docs/training.md): 1.5B- then 14B-shaped Qwen2 models with random
# weights, LoRA in bf16, G=8 completions of 512 tokens, one GRPO update; peak memory
# against the memory plan, tokens/s, update time. Sized for < 8 minutes on one H200.
# Needs torch, transformers, peft, accelerate and this repository; no vLLM, no network.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
$PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
pip_missing=$($PY -c "import msgpack, structlog" 2>&1 || true)
if [ -n "$pip_missing" ]; then
  echo "the hpcq core needs msgpack and structlog: pip install msgpack structlog" >&2
  exit 2
fi
exec timeout 470 $PY ops/gpu/check.py --shapes "${SHAPES:-1.5b,14b}" "$@"
