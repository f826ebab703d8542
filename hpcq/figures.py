"""Figures for reports, drawn with matplotlib (the `plots` extra).

matplotlib is imported inside the functions (Agg canvas, no pyplot and no global
state): the core runs without it, and a report writer that catches `PlotsUnavailable`
writes its text and skips the picture. Used by the run report, `hpcq evaluate` and the
SQD plots.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from hpcq.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_DPI = 100


class PlotsUnavailable(ConfigError):
    """matplotlib is not installed: plots are skipped, reports still written."""


def new_figure(width_px: int, height_px: int) -> Figure:
    """A figure on an Agg canvas; raises PlotsUnavailable without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # not installed, or installed but broken
        raise PlotsUnavailable(
            f"plots need matplotlib ({exc.name or exc} is missing): pip install 'hpcq[plots]'"
        ) from exc
    fig = Figure(figsize=(width_px / _DPI, height_px / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()
