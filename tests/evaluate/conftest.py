"""Fixtures of the evaluation tests: the small model and the real broker with real-engine
consumers come from the training tests' fixtures."""

from __future__ import annotations

from train.conftest import space, tiny_model

__all__ = ["space", "tiny_model"]
