"""Prompts carry the stage's constraints; every corpus variant is honest about its
techniques and satisfies the constraints it is sampled under."""

from __future__ import annotations

import random
from pathlib import Path

from bridges.bootstrap_variants import (
    FAMILIES,
    Variant,
    allowed,
    labelled_variants,
    sample_constraints,
)
from hpcq.eval import techniques as tq
from hpcq.eval.problems import load_problem
from hpcq.outcome import Constraints
from hpcq.train.prompts import DEFAULT_STAGE, FixedStages, PromptStage, build_prompt, fenced
from tests.test_preprocess import preprocessed

# What each template does, written out here from reading the templates (not from
# bridges.bootstrap_variants' own table, nor from the detector): rows4 updates C in memory (no
# accumulators) and its 4-row step is unroll-and-jam, not unrolling.
TEMPLATE_TECHNIQUES = {
    "ijk": set(),
    "ikj": set(),
    "blocked": {"cache_blocking"},
    "rows4": set(),
    "tile4x4": {"register_blocking"},
    "packed": {"packing"},
    "unroll4": {"loop_unrolling"},
}


def expected_techniques(v: Variant) -> set[str]:
    """The family's techniques plus one per pragma the variant declares."""
    found = set(TEMPLATE_TECHNIQUES[v.family])
    if v.unroll_pragma:
        found.add("loop_unrolling")
    if v.vector_pragma:
        found.add("simd")
    if v.openmp:
        found.add("openmp")
    return found


def test_prompt_names_problem_and_constraints() -> None:
    problem = load_problem("dgemm-256")
    stage = PromptStage(
        "s1", Constraints(forbidden=frozenset({"openmp", "simd"}), required=frozenset({"packing"}))
    )
    system, user = build_prompt(problem, stage, cores=2)
    assert system.role == "system" and user.role == "user"
    assert problem.signature in user.content and "256 x 256 x 256" in user.content
    assert "Forbidden techniques: openmp, simd." in user.content
    assert "Required techniques: packing." in user.content
    assert "2 core(s)" in user.content


def test_default_stage_allows_everything() -> None:
    _, user = build_prompt(load_problem("dgemm-256"), FixedStages().stage_for("dgemm-256"))
    assert "Forbidden techniques: none." in user.content
    assert FixedStages().stage_for("x") is DEFAULT_STAGE


def test_hint_is_appended() -> None:
    _, user = build_prompt(load_problem("dgemm-256"), PromptStage(hint="Beat 10 GFLOPS."))
    assert "Beat 10 GFLOPS." in user.content


def test_declared_labels() -> None:
    assert Variant("ijk").techniques() == frozenset()
    assert Variant("blocked", 64, 4, "omp simd", True).techniques() == {
        "cache_blocking",
        "loop_unrolling",
        "simd",
        "openmp",
    }
    assert Variant("rows4", vector_pragma="GCC ivdep").techniques() == {"simd"}
    assert {x.techniques for x in labelled_variants()} >= {frozenset(), frozenset({"packing"})}


def test_every_variant_labelled_by_the_detector(tmp_path: Path) -> None:
    """The declared labels are what the detector finds, on the template and on what the
    compiler reads (gcc -E), so a sample never teaches a violation."""
    variants = labelled_variants()
    assert {x.variant.family for x in variants} == set(FAMILIES) == set(TEMPLATE_TECHNIQUES)
    for x in variants:
        expected = expected_techniques(x.variant)
        assert x.techniques == expected, x.variant
        assert set(tq.detect(x.source)) == expected, x.variant
        assert set(tq.detect(preprocessed(tmp_path, x.source))) == expected, x.variant
        assert x.source.startswith(("void dgemm(", "#include <stdlib.h>"))
        assert "omp simd" not in x.source or "GCC unroll" not in x.source


def test_sampled_constraints_always_have_a_variant() -> None:
    rng = random.Random(3)
    for _ in range(200):
        c = sample_constraints(rng)
        ok = allowed(c)
        assert ok
        for x in ok:
            assert not (x.techniques & c.forbidden) and c.required <= x.techniques


def test_fenced_round_trip() -> None:
    from hpcq.train.extract import extract_code

    src = labelled_variants()[0].source
    assert extract_code(fenced(src), "dgemm").source == src


def test_paper_config_loads() -> None:
    from pathlib import Path

    from hpcq.train.settings import load_train_settings

    path = Path(__file__).resolve().parents[2] / "ops/configs/qwen2.5-coder-14b-h200.toml"
    s = load_train_settings(path, loop={"steps": 3})
    assert s.policy.backend == "vllm" and s.policy.beta > 0 and s.loop.group_size == 8
    assert s.loop.steps == 3  # the command line wins over the file


def test_unknown_settings_fail_fast() -> None:
    import pytest

    from hpcq.errors import ConfigError
    from hpcq.train.settings import load_train_settings

    with pytest.raises(ConfigError, match="unknown key"):
        load_train_settings(None, policy={"learning_rate": 1.0})
    with pytest.raises(ConfigError, match="loss_type"):
        load_train_settings(None, policy={"loss_type": "ppo"})


def test_non_square_prompts_say_which_size_is_which() -> None:
    from hpcq.eval.problems import load_problem
    from hpcq.train.prompts import DEFAULT_STAGE, user_text

    first = user_text(load_problem("dgemm-1000x300x700"), DEFAULT_STAGE).splitlines()[0]
    assert "(M = 1000, N = 300, K = 700)" in first
    cube = user_text(load_problem("dgemm-256"), DEFAULT_STAGE).splitlines()[0]
    assert "(256 x 256 x 256)" in cube  # the training prompts keep their text
