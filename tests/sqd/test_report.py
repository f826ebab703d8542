"""`hpcq archive show|export` on a snapshot, and the plots (matplotlib) it writes."""

from __future__ import annotations

import io
import json
import struct
import sys
import zlib
from pathlib import Path

import pytest

from hpcq.cli import main
from hpcq.sqd.controller import Controller
from hpcq.sqd.service import snapshot_bytes, state_path_for, write_atomic

from .helpers import fast_default, random_stream


def read_png(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, raw scanlines) of an 8-bit RGB or RGBA PNG, checking signature,
    chunk CRCs and sizes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8 and colour in (2, 6)
    raw = zlib.decompress(chunks[b"IDAT"])
    assert len(raw) == height * (1 + (3 if colour == 2 else 4) * width)
    return width, height, raw


def distinct_colours(data: bytes) -> int:
    """Colours in the picture (Pillow comes with matplotlib): a blank canvas has one."""
    from PIL import Image

    colours = Image.open(io.BytesIO(data)).convert("RGB").getcolors(maxcolors=1 << 24)
    assert colours is not None
    return len(colours)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    c = Controller(fast_default())
    for record in random_stream(seed=5, steps=25):
        c.feed(record)
    write_atomic(state_path_for(tmp_path, "demo"), snapshot_bytes(c, 123, "demo"))
    return tmp_path


def test_archive_show(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["archive", "show", "--namespace", "demo", "--state-dir", str(state_dir)]) == 0
    out = capsys.readouterr().out
    assert "namespace demo:" in out and "QD-score" in out
    assert "scalar" in out and "dgemm-512" in out
    args = ["archive", "show", "--namespace", "demo", "--state-dir", str(state_dir), "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["cells"] == len(doc["cells"]) > 0
    assert doc["summary"]["offset"] == 123


def test_archive_export(state_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = ["archive", "export", "--namespace", "demo", "--state-dir", str(state_dir)]
    assert main([*args, "--out", str(out)]) == 0
    cells = (out / "cells.csv").read_text().splitlines()
    sources = sorted((out / "elites").rglob("*.c"))
    assert len(sources) == len(cells) - 1 > 0
    assert "hpcq SQD elite" in sources[0].read_text()
    for png in ("heatmap.png", "timeline-dgemm-256.png", "timeline-dgemm-512.png"):
        data = (out / png).read_bytes()
        width, height, _ = read_png(data)
        assert width > 400 and height > 300
        assert distinct_colours(data) > 20  # drawn on, not blank


def test_archive_export_without_matplotlib(
    state_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The tables and sources are written, the plots skipped with a line that says why."""
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ModuleNotFoundError
    out = tmp_path / "report"
    args = ["archive", "export", "--namespace", "demo", "--state-dir", str(state_dir)]
    assert main([*args, "--out", str(out)]) == 0
    assert (out / "cells.csv").exists() and sorted((out / "elites").rglob("*.c"))
    assert not list(out.glob("*.png"))
    assert "no plots" in capsys.readouterr().out


def test_archive_without_state_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["archive", "show", "--namespace", "none", "--state-dir", str(tmp_path)]) == 2
    assert "no SQD state" in capsys.readouterr().err


def test_plots_of_a_problem_without_results() -> None:
    from hpcq.sqd.archive import Archive
    from hpcq.sqd.controller import ProblemState, StageRecord
    from hpcq.sqd.plots import heatmap_png, timeline_png
    from hpcq.sqd.stages import Stage

    state = ProblemState("p", "s", [StageRecord(0, Stage("only"), "start", 5)])
    assert read_png(timeline_png(state))[0] > 0
    assert read_png(heatmap_png(Archive()))[0] > 0
