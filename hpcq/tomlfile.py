"""Reading a TOML file, with one set of errors for every config hpcq reads.

Settings files (`--config`), training settings, problem families, evaluation suites and
SQD schedules are all TOML. Each caller validates its own schema; this module only turns
a path into a table, and every way that can fail into a `ConfigError` that names the
file and what to do about it:

    the path does not exist              "<what> <path> does not exist"
    the path is a directory              "<what> <path> is a directory, not a TOML file"
    it cannot be read (permissions, I/O) "<what> <path> cannot be read: <reason>"
    the bytes are not UTF-8              "<what> <path> is not UTF-8 text ..."
    a syntax error                       "<what> <path> is not valid TOML: <what is wrong>
                                          (at line L, column C)"
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from hpcq.errors import ConfigError


def read_toml(path: Path | str, what: str = "config file", *, hint: str = "") -> dict[str, Any]:
    """The top-level table of the TOML file at `path`.

    `what` names the file in messages ("config file", "SQD config", "suite"); `hint`,
    if given, is added to the message for a missing file (where to find valid ones)."""
    return read_toml_and_bytes(path, what, hint=hint)[0]


def read_toml_and_bytes(
    path: Path | str, what: str = "config file", *, hint: str = ""
) -> tuple[dict[str, Any], bytes]:
    """`read_toml`, and the exact bytes it parsed: for a caller that fingerprints the
    file (the SQD controller records which schedule file its state was built under), so
    the fingerprint and the table come from one read."""
    path = Path(path)
    where = f"{what} {path}"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist" + (f" ({hint})" if hint else "")) from None
    except IsADirectoryError:
        raise ConfigError(f"{where} is a directory, not a TOML file; give the file") from None
    except OSError as exc:
        raise ConfigError(
            f"{where} cannot be read: {exc.strerror or exc}; check its permissions"
        ) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{where} is not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from exc
    try:
        # In Python 3.11 the error's message ends with "(at line L, column C)".
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from exc
    return data, raw
