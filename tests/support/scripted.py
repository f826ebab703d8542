"""A stand-in evaluator driven by directives in the source, for pipeline benchmarks and
fault-injection tests (`python -m tests.support.scripted_consumer`). Never used for rewards.

Directives are comment lines `// hpcq-test: NAME[=VALUE]`:
    sleep=S        wait S seconds (asyncio, like a subprocess would)
    gflops=G       report status ok with G GFLOPS (default 1.0)
    status=NAME    report that status (reward -1, or none for infra_error)
    raise          raise InfraError (the node is broken)
    exit           kill the whole consumer process at once, as a kernel that takes the
                   node down would (the delivery is lost with the connection)
Without directives it answers `ok` at once: the no-op evaluator of the benchmarks.
"""

from __future__ import annotations

import asyncio
import os
import re

from hpcq.errors import InfraError
from hpcq.outcome import EvalRequest, EvalResult, Status

_DIRECTIVE = re.compile(r"^\s*//\s*hpcq-test:\s*([a-z_]+)(?:=(\S+))?\s*$", re.MULTILINE)


class ScriptedEvaluator:
    def __init__(self, node_class: str = "") -> None:
        self.node_class = node_class
        self.calls = 0

    async def evaluate(self, request: EvalRequest) -> EvalResult:
        self.calls += 1
        directives = {m.group(1): m.group(2) or "" for m in _DIRECTIVE.finditer(request.source)}
        if "exit" in directives:
            os._exit(17)
        if "sleep" in directives:
            await asyncio.sleep(float(directives["sleep"]))
        if "raise" in directives:
            raise InfraError("scripted: the node is broken")
        status = Status(directives.get("status") or "ok")
        gflops = float(directives.get("gflops") or 1.0) if status is Status.OK else None
        reward = gflops if status is Status.OK else (None if status is Status.INFRA_ERROR else -1.0)
        return EvalResult(
            status=status,
            reward=reward,
            message="scripted",
            gflops=gflops,
            problem_id=request.problem_id,
            node_class=self.node_class,
        )
