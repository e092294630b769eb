"""The report's plots, drawn with matplotlib (Agg backend) and returned as PNG bytes.

matplotlib is the optional ``report`` extra: it is imported on first use, and its absence
gives a one-line :class:`~kerasq.errors.KerasqError` naming the fix.

Example:
    >>> png = sqnr_chart(report.quantization)  # doctest: +SKIP
"""

from __future__ import annotations

import io
import math
from typing import Any, Dict, Optional, Sequence

from kerasq.errors import KerasqError

__all__ = ["sqnr_chart", "histogram_grid"]

GRID_LINES_MAX = 64  # levels drawn as lines when at most this many fall in view
LOW_SQNR_DB = 20.0  # bars below this are drawn in the warning colour


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise KerasqError("the HTML report needs matplotlib: pip install 'kerasq[report]' "
                          "(or write --report report.json)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def sqnr_chart(rows: Sequence[Dict[str, Any]]) -> Optional[bytes]:
    """Horizontal bars: SQNR in dB of every quantized tensor (layer/tensor), in model order.

    Exact tensors (inf) are drawn at the axis end and labelled "exact"; tensors without
    SQNR (no data) and tensors still float (a bias waiting for the export's accumulator grid)
    are left out. None if no tensor has an SQNR.
    """
    items = [(f"{r['layer']} / {r['tensor']}", r["sqnr_db"]) for r in rows
             if isinstance(r.get("sqnr_db"), float) and not math.isnan(r["sqnr_db"])
             and not str(r.get("format", "")).startswith("float")]
    if not items:
        return None
    plt = _pyplot()
    finite = [v for _, v in items if math.isfinite(v)]
    top = max(finite + [LOW_SQNR_DB]) * 1.1 + 5
    fig, ax = plt.subplots(figsize=(8.5, 0.8 + 0.26 * len(items)))
    labels = [label for label, _ in items]
    values = [min(v, top) for _, v in items]
    colors = ["#c0392b" if v < LOW_SQNR_DB else ("#7f8c8d" if math.isinf(v) else "#2e86c1")
              for _, v in items]
    positions = list(range(len(items)))[::-1]
    ax.barh(positions, values, color=colors, height=0.7)
    for pos, (_, v) in zip(positions, items):
        text = "exact" if math.isinf(v) else f"{v:.1f}"
        ax.text(min(v, top) + top * 0.01, pos, text, va="center", fontsize=8)
    ax.set_yticks(positions)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlim(0, top * 1.12)
    ax.set_ylim(-0.6, len(items) - 0.4)
    ax.axvline(LOW_SQNR_DB, color="#c0392b", lw=0.8, ls=":")
    ax.set_xlabel("SQNR (dB), higher is better; red: below 20 dB")
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return _png(fig)


def _draw_grid(ax: Any, grid: Dict[str, Any], lo: float, hi: float) -> str:
    """Clipping bounds as dashed red lines, levels as faint lines when few are in view.

    Returns a caption fragment describing the grid."""
    step = grid["step"]
    first = max(math.ceil(lo / step), round(grid["low"] / step))
    last = min(math.floor(hi / step), round(grid["high"] / step))
    in_view = max(0, last - first + 1)
    if 0 < in_view <= GRID_LINES_MAX:
        for k in range(first, last + 1):
            ax.axvline(k * step, color="#f39c12", lw=0.6, alpha=0.55, zorder=0)
    for bound in (grid["low"], grid["high"]):
        if lo - (hi - lo) * 0.02 <= bound <= hi + (hi - lo) * 0.02:
            ax.axvline(bound, color="#c0392b", lw=1.2, ls="--", zorder=3)
    fl = f"{grid['frac_bits']:g}"
    if grid.get("frac_bits_max", grid["frac_bits"]) != grid["frac_bits"]:
        fl += f"..{grid['frac_bits_max']:g}"
    return (f"{grid['bits']}-bit, fl {fl}, step {step:g}, range [{grid['low']:g}, "
            f"{grid['high']:g}], {in_view} levels in view")


def histogram_grid(histograms: Sequence[Dict[str, Any]], title: str, columns: int = 3,
                   log: bool = False) -> Optional[bytes]:
    """Small multiples: one histogram per tensor (``log``: log counts), its quantization grid
    drawn (orange level lines where at most 64 levels are in view, red dashed clipping
    bounds). None for an empty list."""
    items = [h for h in histograms if h.get("counts")]
    if not items:
        return None
    plt = _pyplot()
    rows = math.ceil(len(items) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.1 * columns, 2.55 * rows),
                             squeeze=False)
    for ax, h in zip(axes.ravel(), items):
        edges, counts = h["edges"], h["counts"]
        widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
        ax.bar(edges[:-1], counts, width=widths, align="edge", color="#2e86c1",
               edgecolor="none", zorder=2)
        if log:
            from matplotlib.ticker import NullFormatter

            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
        lo, hi = edges[0], edges[-1]
        caption = "float (not quantized)"
        if h.get("grid"):
            caption = _draw_grid(ax, h["grid"], lo, hi)
            clipped = h.get("clipped_low", 0) + h.get("clipped_high", 0)
            if clipped:
                caption += f", {clipped} clipped"
        pad = (hi - lo) * 0.02
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_title(f"{h['layer']} / {h['tensor']}", fontsize=9, loc="left")
        ax.set_xlabel(caption, fontsize=7)
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes.ravel()[len(items):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11, x=0.01, ha="left")
    fig.tight_layout()
    return _png(fig)

