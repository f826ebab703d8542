"""hpcq.tomlfile: every way reading a TOML file fails is a ConfigError naming the file."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hpcq.errors import ConfigError
from hpcq.eval.problems import catalogue
from hpcq.eval.settings import load_settings
from hpcq.sqd.stages import load_config
from hpcq.tomlfile import read_toml, read_toml_and_bytes
from hpcq.train.evaluate.suites import load_suite
from hpcq.train.settings import load_train_settings


def write(tmp_path: Path, data: str | bytes, name: str = "c.toml") -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def message(path: Path | str, what: str = "config file", **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        read_toml(path, what, **kwargs)
    return str(info.value)


def test_reads_the_table(tmp_path: Path) -> None:
    text = '[node]\nname = "x86_64-avx2"  # é\ncflags = ["-O3"]\r\n'
    path = write(tmp_path, text)
    assert read_toml(path) == {"node": {"name": "x86_64-avx2", "cflags": ["-O3"]}}
    assert read_toml(str(path)) == read_toml(path)
    data, raw = read_toml_and_bytes(path)
    assert data == read_toml(path) and raw == text.encode()  # the bytes it parsed


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert message(path) == f"config file {path} does not exist"
    hinted = message(path, "SQD config", hint="see kernels/sqd/")
    assert hinted == f"SQD config {path} does not exist (see kernels/sqd/)"


def test_directory(tmp_path: Path) -> None:
    assert (
        message(tmp_path, "suite")
        == f"suite {tmp_path} is a directory, not a TOML file; give the file"
    )


def test_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "a = 1\n")

    def denied(self: Path) -> bytes:  # chmod 000 does not stop root, who may run this
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    text = message(path)
    assert text == f"config file {path} cannot be read: Permission denied; check its permissions"


def test_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, b"name = 'caf\xe9'\n")  # Latin-1
    assert message(path) == (
        f"config file {path} is not UTF-8 text (byte 0xe9 at offset 11); save it as UTF-8"
    )


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[node\n", "line 1, column 6"),
        ("a = 1\nb = \n", "line 2, column 5"),
        ("a = 1\na = 2\n", "line 2, column 6"),  # a key defined twice
    ],
)
def test_syntax_error_gives_line_and_column(tmp_path: Path, text: str, where: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        read_toml(path)
    assert str(info.value).startswith(f"config file {path} is not valid TOML: ")
    assert f"(at {where})" in str(info.value)
    assert isinstance(info.value.__cause__, tomllib.TOMLDecodeError)  # chained


# Every TOML file hpcq reads goes through it, each naming its kind of file.
LOADERS: list[tuple[str, Callable[[Path], object]]] = [
    ("config file", load_settings),
    ("config file", load_train_settings),
    ("SQD config", load_config),
    ("suite", lambda path: load_suite(str(path), path.parent)),
    ("problem family", lambda path: catalogue(path.parent.parent)),
]


@pytest.mark.parametrize(("what", "load"), LOADERS, ids=[w for w, _ in LOADERS])
def test_every_loader_uses_it(tmp_path: Path, what: str, load: Callable[[Path], object]) -> None:
    (tmp_path / "problems").mkdir()
    path = write(tmp_path / "problems", "[broken\n", "family.toml")
    with pytest.raises(ConfigError, match=f"^{what} .* is not valid TOML: .*at line 1"):
        load(path)
    path.write_bytes(b"\xff")
    with pytest.raises(ConfigError, match=f"^{what} .* is not UTF-8 text"):
        load(path)
