from __future__ import annotations

from pathlib import Path

import pytest

from hpcq.errors import ConfigError
from hpcq.eval.settings import EngineSettings, RewardSettings, load_settings


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "hpcq.toml"
    p.write_text(text)
    return p


def test_defaults_are_the_papers_tiers() -> None:
    r = EngineSettings().reward
    assert (r.violation, r.compile_error, r.timeout, r.runtime_error, r.wrong_result) == (
        -100,
        -40,
        -30,
        -20,
        -10,
    )


def test_file_overrides_sections(tmp_path: Path) -> None:
    s = load_settings(
        write(
            tmp_path,
            """
[node]
name = "aarch64-sve"
cflags = ["-O3", "-mcpu=a64fx"]
peak_gflops_per_core = 70
[reward]
shaping = "fraction_of_peak"
timeout = -25
[engine]
use_cache = false
""",
        )
    )
    assert s.node.name == "aarch64-sve"
    assert s.node.cflags == ("-O3", "-mcpu=a64fx")
    assert s.node.peak_gflops_per_core == 70.0
    assert s.reward.shaping == "fraction_of_peak"
    assert s.reward.timeout == -25.0
    assert s.use_cache is False


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[node]\ncflag = ['-O2']\n", "unknown key(s) in [node]: cflag"),
        ("[nodes]\nname='x'\n", "unknown section(s) nodes"),
        ("[measure]\nmin_calls = 'ten'\n", "expected an integer"),
        ("[reward]\nshaping = 'linear'\n", "expected one of gflops"),
        ("[reward]\nshaping = 'log_speedup'\n", "needs reward.baseline_gflops"),
        ("[node]\npeak_gflops_per_core = -3\n", "must be > 0"),
        ("[node\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_fix(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        load_settings(write(tmp_path, text))
    assert fragment in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_log_speedup_needs_baseline() -> None:
    with pytest.raises(ConfigError):
        EngineSettings(reward=RewardSettings(shaping="log_speedup"))
