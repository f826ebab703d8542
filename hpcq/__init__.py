"""hpcq: online reinforcement learning for HPC code generation with real-machine rewards.

The core package is pure asyncio and never imports torch, transformers, trl, vllm,
aiomqtt or `bridges`: a CPU benchmark node installs it alone. Its packages are layers,
each importing only those below it (import-linter checks it in `make lint`):

    cli       the `hpcq` command
    sqd       the Staged Quality-Diversity controller
    train     online GRPO over the `Policy` protocol (the torch backends are in bridges/)
    pipeline  RabbitMQ: wire records, consumer, producer core, replay, status, telemetry
    eval      one untrusted kernel in, one honest verdict out

with `errors`, `outcome`, `logs`, `figures` and `tomlfile` shared by all of them.
"""

from __future__ import annotations

__version__ = "0.1.0"
