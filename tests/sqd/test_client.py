"""The producer's view of stages, without a broker: updates applied in any order."""

from __future__ import annotations

from hpcq.outcome import Constraints
from hpcq.pipeline.broker import BrokerSettings
from hpcq.pipeline.messages import StageUpdate
from hpcq.sqd.client import StageClient

from .helpers import fast_default


def client() -> StageClient:
    return StageClient(BrokerSettings(), "ns", fast_default())


def update(index: int, name: str, forbidden: set[str] | None = None) -> StageUpdate:
    c = Constraints(forbidden=frozenset(forbidden or ()))
    return StageUpdate(
        run_id="r", problem_id="dgemm-512", stage=index, stage_name=name, constraints=c
    )


def test_newest_stage_wins_and_repeats_are_dropped() -> None:
    c = client()
    assert c.current_stage("dgemm-512")[0].name == "0-free"  # before any update
    assert c.apply(update(2, "2-no-simd", {"simd"}))
    assert not c.apply(update(1, "1-no-openmp", {"openmp"}))  # late copy of an older one
    assert not c.apply(update(2, "2-no-simd", {"simd"}))  # periodic re-announcement
    constraints, prompt, elites = c.current_constraints("dgemm-512")
    assert constraints.forbidden == {"simd"} and elites == ()
    assert "relied mostly on simd" in prompt and "Do not use" in prompt


def test_final_stage_and_producer_view() -> None:
    c = client()
    c.apply(update(6, "6-free"))
    stage = c.stage_for("dgemm-512")
    assert stage.name == "6-free" and stage.constraints == Constraints()
    assert "Last stage" in stage.hint
