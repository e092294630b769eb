"""The report as one self-contained HTML page: inline CSS, plots as base64 PNG, no scripts
and no external resources, so the file can be mailed or attached to a CI run.

Example:
    >>> text = render_html(build_report(qmodel, x))  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import math
from typing import Any, Dict, List, Optional, Sequence

from kerasq.report.plots import LOW_SQNR_DB, histogram_grid, sqnr_chart

__all__ = ["render_html"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 color:#1c2833;background:#f4f6f7}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:34px 0 10px;
 border-bottom:1px solid #d5d8dc;padding-bottom:4px}
.sub{color:#566573;font-size:13px;margin-bottom:18px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #d5d8dc;border-radius:6px;padding:10px 14px;
 min-width:130px}
.card .v{font-size:20px;font-weight:600} .card .k{font-size:12px;color:#566573}
table{border-collapse:collapse;background:#fff;font-size:12.5px;margin:4px 0}
th,td{border:1px solid #d5d8dc;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#eaeded} td.l,th.l{text-align:left}
tr.low td{background:#fdedec}
.note{color:#566573;font-size:12.5px;margin:6px 0}
img{max-width:100%;background:#fff;border:1px solid #d5d8dc;border-radius:4px}
nav a{margin-right:14px;font-size:13px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}g}"
    return str(value)


def _span(value: Optional[Sequence[float]]) -> str:
    if not value:
        return "-"
    lo, hi = value
    return _num(lo) if lo == hi else f"{_num(lo)}..{_num(hi)}"


def _bytes(n: int) -> str:
    return f"{n:,} B ({n / 1024:.1f} KiB)"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1,
           row_classes: Optional[Sequence[str]] = None) -> str:
    head = "".join(f'<th class="l">{_e(h)}</th>' if i < left else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(headers))
    body = []
    for n, row in enumerate(rows):
        cls = f' class="{row_classes[n]}"' if row_classes and row_classes[n] else ""
        cells = "".join(f'<td class="l">{_e(c)}</td>' if i < left else f"<td>{_e(c)}</td>"
                        for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(png: Optional[bytes], alt: str) -> str:
    if png is None:
        return f'<p class="note">{_e(alt)}: nothing to plot.</p>'
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _cards(summary: Dict[str, Any], report: Any) -> str:
    cards = [("layers", f"{summary['layers']}"), ("parameters", f"{summary['parameters']:,}"),
             ("quantized tensors", f"{summary['quantized_tensors']}"),
             ("kernel sparsity", f"{100 * summary['kernel_sparsity']:.1f} %")]
    if summary["lowest_sqnr_db"] is not None:
        cards.append(("lowest SQNR", f"{_num(summary['lowest_sqnr_db'], 3)} dB"))
    for f in report.files:
        cards.append((f"{f['kind']} file (gzip)", f"{f['gzip_bytes'] / 1024:.1f} KiB"))
    if report.latency:
        median = report.latency["median_us"]
        cards.append(("TFLite latency", f"{median:.1f} µs" if median < 10 else
                      f"{median:,.0f} µs"))
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="v">{_e(v)}</div><div class="k">{_e(k)}</div></div>'
        for k, v in cards) + "</div>"


def render_html(report: Any) -> str:
    """The page for a :class:`kerasq.report.RunReport` (sections in the module docstring
    of :mod:`kerasq.report`)."""
    summary = report.summary
    parts: List[str] = []
    where = f" ({_e(report.model_path)})" if report.model_path else ""
    data = (f"SQNR and activations on {report.samples} input samples"
            if report.samples else "no input data: weights only")
    parts.append(f"<h1>kerasq report: {_e(report.model_name)}</h1>"
                 f'<div class="sub">model{where}; {_e(data)}</div>')
    parts.append('<nav><a href="#files">files and latency</a><a href="#quant">quantization'
                 '</a><a href="#sqnr">SQNR</a><a href="#sparsity">sparsity</a><a '
                 'href="#weights">weights</a><a href="#acts">activations</a></nav>')
    parts.append(_cards(summary, report))
    for note in report.notes:
        parts.append(f'<p class="note">{_e(note)}</p>')

    parts.append('<h2 id="files">Files and latency</h2>')
    if report.files:
        parts.append(_table(("file", "kind", "size", "gzip -9", "gzip / size"), [
            (f["file"], f["kind"], _bytes(f["bytes"]), _bytes(f["gzip_bytes"]),
             f"{f['gzip_bytes'] / f['bytes']:.2f}" if f["bytes"] else "-")
            for f in report.files], left=2))
    else:
        parts.append('<p class="note">no file given</p>')
    if report.latency:
        lat = report.latency
        parts.append(f'<p class="note">TFLite interpreter (ai-edge-litert, default kernels), '
                     f'batch {lat["batch"]}, {lat["threads"]} thread: median '
                     f'{lat["median_us"]:.1f} µs, fastest {lat["min_us"]:.1f} µs over '
                     f'{lat["runs"]} timed runs after warm-up.</p>')
    else:
        parts.append('<p class="note">latency: give the exported file (--tflite model.tflite)'
                     '</p>')

    parts.append('<h2 id="quant">Quantization</h2>')
    rows = report.quantization
    if rows:
        parts.append('<p class="note">One row per quantized tensor. fl: fractional length '
                     '(value = integer · 2^-fl; a range is per channel). SQNR = '
                     '10·log10(Σx² / Σ(x − q(x))²) of what the quantizer receives; '
                     f'rows below {LOW_SQNR_DB:g} dB are shaded.</p>')
        classes = ["low" if isinstance(r.get("sqnr_db"), float) and r["sqnr_db"] < LOW_SQNR_DB
                   else "" for r in rows]
        parts.append(_table(
            ("layer", "tensor", "format", "bits", "fl", "signed", "min", "max", "SQNR dB"),
            [(r["layer"], r["tensor"], r["format"], _num(r.get("bits")),
              _span(r.get("frac_bits")),
              "-" if r.get("signed") is None else ("yes" if r["signed"] else "no"),
              _num(r.get("min")), _num(r.get("max")),
              "-" if r.get("sqnr_db") is None else _num(r["sqnr_db"], 4))
             for r in rows], left=3, row_classes=classes))
    else:
        parts.append('<p class="note">a float model: no quantized tensors</p>')
    parts.append('<h2 id="sqnr">SQNR per tensor</h2>')
    parts.append(_img(sqnr_chart(rows), "SQNR per quantized tensor"))

    parts.append('<h2 id="sparsity">Sparsity</h2>')
    if report.sparsity:
        parts.append(_table(("layer", "type", "weight", "zeros", "count", "sparsity"), [
            (s["layer"], s["layer_type"], s["weight"], f"{s['zeros']:,}", f"{s['count']:,}",
             f"{100 * s['sparsity']:.1f} %") for s in report.sparsity], left=3))
    else:
        parts.append('<p class="note">no kernels</p>')

    parts.append('<h2 id="weights">Weight histograms</h2>')
    parts.append('<p class="note">Float kernel values. Orange: quantization '
                 'levels (drawn when at most 64 are in view); red dashed: clipping bounds; '
                 'per-channel grids show the widest channel.</p>')
    parts.append(_img(histogram_grid(report.weight_histograms, "weights"), "weight histograms"))
    parts.append('<h2 id="acts">Activation histograms</h2>')
    parts.append('<p class="note">Quantized layer outputs on the input data, as the quantized '
                 'model computes them (log counts; values pile up at a red bound where they '
                 'clip, and a gap between the data and a bound is unused range).</p>')
    parts.append(_img(histogram_grid(report.activation_histograms, "layer outputs", log=True),
                      "activation histograms"))
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>kerasq report: {_e(report.model_name)}</title><style>{_CSS}</style>"
            f"</head><body><main>\n{body}\n</main></body></html>\n")
