"""Schedule files: the shipped one loads; mistakes stop `hpcq sqd` at start, clearly."""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from pathlib import Path

import pytest

from hpcq.errors import ConfigError
from hpcq.eval.problems import default_kernels_dir
from hpcq.eval.techniques import CATALOGUE
from hpcq.outcome import Constraints
from hpcq.sqd.stages import default_config_path, load_config

from .helpers import config

GOOD = """
default_schedule = "s"
[schedules.s]
advance = {{ max_steps = 3 }}
[[schedules.s.stages]]
name = "first"
{stage}
[[schedules.s.stages]]
name = "last"
"""


def test_the_shipped_schedules() -> None:
    cfg = load_config(default_config_path(default_kernels_dir()))
    cumulative = cfg.schedules["cumulative"]
    assert [s.name for s in cumulative.stages] == ["scalar", "blocking", "simd", "openmp", "free"]
    assert cumulative.stages[0].constraints.forbidden == frozenset(CATALOGUE)
    assert cumulative.stages[-1].constraints == Constraints()
    # Each stage allows at least what the previous one did.
    allowed = [frozenset(CATALOGUE) - s.constraints.forbidden for s in cumulative.stages]
    assert all(a <= b for a, b in itertools.pairwise(allowed))
    assert cfg.schedules["diversity"].diversity
    assert cfg.schedule_for("dgemm-512").name == "diversity"
    text = cumulative.stages[1].prompt_text()
    assert "openmp" in text and "simd" in text and "must use" in text


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ('forbidden = ["simdd"]', "unknown technique name(s) 'simdd'; known: openmp, simd"),
        ('required = ["OpenMP"]', "'OpenMP'"),
        ('allowed = ["tiling"]', "'tiling'"),
        ('allowed = ["simd"]\nforbidden = ["openmp"]', "`allowed` or `forbidden`, not both"),
        ('forbidden = ["simd"]\nrequired = ["simd"]', "simd both forbidden and required"),
        ('allowed = ["simd"]\nrequired = ["openmp"]', "openmp are not allowed"),
        ('forbid = ["simd"]', "unknown key(s) forbid"),
        ("advance = { max_step = 3 }", "unknown advance key(s) max_step"),
        ("advance = { plateau_pct = 2.0 }", "plateau_pct and plateau_steps go together"),
        ('advance = { max_steps = "3" }', "expected an integer"),
    ],
)
def test_mistakes_are_named(stage: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(GOOD.format(stage=stage))
    assert expected in str(err.value)
    assert "test config: schedule 's' stage 0 ('first')" in str(err.value)


def test_other_mistakes() -> None:
    with pytest.raises(ConfigError, match="would never end"):
        config(GOOD.format(stage="").replace("advance = { max_steps = 3 }", ""))
    with pytest.raises(ConfigError, match="schedule 'nope', which is not defined"):
        config(GOOD.format(stage="") + '[problems.p]\nschedule = "nope"\n')
    with pytest.raises(ConfigError, match="tie_order: unknown technique"):
        config(GOOD.format(stage="").replace("[schedules.s]", '[schedules.s]\ntie_order = ["x"]'))
    with pytest.raises(ConfigError, match=r"only \{technique\} and \{description\}"):
        bad = 'diversity = true\ndiversity_prompt = "{name}"'
        config(GOOD.format(stage="").replace("[schedules.s]", "[schedules.s]\n" + bad))


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[schedules\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


async def test_hpcq_sqd_stops_at_start_on_an_unknown_technique(tmp_path: Path) -> None:
    """Before any broker connection: the URL points nowhere, the error must come first."""
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.format(stage='forbidden = ["vectorization"]'))
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hpcq", "sqd", "--sqd-config", str(bad),
        "--amqp-url", "amqp://guest:guest@127.0.0.1:1/", "--state-dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2, err.decode()
    assert "unknown technique name(s) 'vectorization'" in err.decode()
    assert str(bad) in err.decode()
    assert time.monotonic() - started < 20
