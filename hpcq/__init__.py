"""hpcq: online reinforcement learning for HPC code generation with real-machine rewards.

The core package is pure asyncio and never imports torch, transformers, trl, vllm or
aiomqtt: a CPU benchmark node installs it alone. ML frameworks live in `bridges/`.
"""

from __future__ import annotations

__version__ = "0.1.0"
