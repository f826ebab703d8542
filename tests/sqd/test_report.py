"""`hpcq archive show|export` on a snapshot, and the PNG writer behind the plots."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

from hpcq.cli import main
from hpcq.png import FONT, Canvas
from hpcq.sqd import Controller
from hpcq.sqd_service import snapshot_bytes, state_path_for, write_atomic

from .helpers import fast_default, random_stream


def read_png(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, raw scanlines), checking signature, chunk CRCs and sizes."""
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
    assert (depth, colour) == (8, 2)
    raw = zlib.decompress(chunks[b"IDAT"])
    assert len(raw) == height * (1 + 3 * width)
    return width, height, raw


def test_canvas_png_round_trip() -> None:
    c = Canvas(20, 10)
    c.rect(0, 0, 4, 4, (255, 0, 0))
    c.text(5, 1, "A1")
    width, height, raw = read_png(c.png())
    assert (width, height) == (20, 10)
    assert raw[1:4] == b"\xff\x00\x00"  # first pixel of the first row, after the filter byte
    assert all(len(rows) == 7 for rows in FONT.values())


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
        width, height, _ = read_png((out / png).read_bytes())
        assert width > 400 and height > 300


def test_archive_without_state_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["archive", "show", "--namespace", "none", "--state-dir", str(tmp_path)]) == 2
    assert "no SQD state" in capsys.readouterr().err


def test_plots_of_a_problem_without_results() -> None:
    from hpcq.archive import Archive
    from hpcq.plots import heatmap_png, timeline_png
    from hpcq.sqd import ProblemState, StageRecord
    from hpcq.stages import Stage

    state = ProblemState("p", "s", [StageRecord(0, Stage("only"), "start", 5)])
    assert read_png(timeline_png(state))[0] > 0
    assert read_png(heatmap_png(Archive()))[0] > 0
