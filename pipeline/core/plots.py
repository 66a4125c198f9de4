"""Matplotlib figures without pyplot's global state, saved atomically (both stages' reports)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from pipeline.core.atomic import write_bytes_atomic


def new_figure(width: float, height: float) -> Any:
    # Figure + Agg canvas directly: no pyplot, so no global backend state is touched
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_bytes_atomic(buf.getvalue(), path)
