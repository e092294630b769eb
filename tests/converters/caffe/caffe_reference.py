"""Independent numpy reference of Caffe's forward pass (test oracle).

Written from the Caffe semantics (BVLC/caffe 9b89154 layer sources as described in
shared/reference/caffe-semantics.md, caffe-golden/INDEX.md, and the SSD / DeepLab /
YOLO-caffe fork layer definitions), NOT from kerasq's converter: it shares no code with
``kerasq.converters.caffe`` (it even has its own tiny prototxt text parser), so agreement
between the two is evidence, not tautology. Everything computes in float64 and returns
float32 like Caffe's blobs. It is validated against real Caffe outputs in
``test_reference_vs_golden.py``.

Entry points:
    parse_prototxt(text) -> dict            # generic protobuf text format -> nested dicts
    run_net(text, params, inputs) -> dict   # every top blob after forward, Caffe layout
    LAYERS[type](bottoms, p, blobs) -> tops # one layer (p = its *_param dict)
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

# --------------------------------------------------------------------------------------
# prototxt text format (just enough: messages, scalars, enums, strings, comments, ';')
# --------------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"\s*(?:(#[^\n]*)|(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')|([{}:;,<>])|([^\s{}:;,<>\"'#]+))"
)


def _tokens(text: str) -> List[str]:
    out: List[str] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise ValueError(f"cannot tokenize prototxt at {text[pos : pos + 30]!r}")
        pos = m.end()
        if m.group(1):
            continue
        tok = m.group(2) or m.group(3) or m.group(4)
        if tok:
            out.append(tok)
    return out


def _scalar(tok: str) -> Any:
    if tok[0] in "\"'":
        return tok[1:-1]
    low = tok.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(tok)
    except ValueError:
        pass
    try:
        return float(tok.rstrip("fF")) if re.match(r"^[-+]?[\d.]", tok) else tok
    except ValueError:
        return tok  # enum identifier


def parse_prototxt(text: str) -> Dict[str, list]:
    """Parse protobuf text format into ``{field: [values...]}`` (every field a list)."""
    toks = _tokens(text)
    pos = 0

    def message(end: Optional[str]) -> Dict[str, list]:
        nonlocal pos
        msg: Dict[str, list] = {}
        while pos < len(toks):
            tok = toks[pos]
            if tok == end:
                pos += 1
                return msg
            if tok in ";,":
                pos += 1
                continue
            name = tok
            pos += 1
            if toks[pos] == ":":
                pos += 1
            if toks[pos] in ("{", "<"):
                close = "}" if toks[pos] == "{" else ">"
                pos += 1
                msg.setdefault(name, []).append(message(close))
            elif toks[pos] == "[":  # pragma: no cover - list syntax unused by Caffe files
                raise ValueError("list syntax not supported")
            else:
                msg.setdefault(name, []).append(_scalar(toks[pos]))
                pos += 1
        if end is not None:
            raise ValueError("unbalanced braces in prototxt")
        return msg

    return message(None)


def one(msg: Dict[str, list], field: str, default: Any = None) -> Any:
    """The (last) value of a singular field, or ``default``."""
    vals = msg.get(field)
    return vals[-1] if vals else default


def many(msg: Dict[str, list], field: str) -> list:
    return list(msg.get(field, []))


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _canon_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} out of range for {ndim}-D blob")
    return axis % ndim


def _spatial(p: Dict[str, list], name: str, default: int, repeated: bool = True) -> List[int]:
    """(h, w) from ``name`` (repeated or scalar) or ``name_h``/``name_w``."""
    if one(p, name + "_h") is not None or one(p, name + "_w") is not None:
        return [int(one(p, name + "_h", default)), int(one(p, name + "_w", default))]
    vals = many(p, name)
    if not vals:
        return [default, default]
    if len(vals) == 1:
        return [int(vals[0])] * 2
    return [int(vals[0]), int(vals[1])]


# --------------------------------------------------------------------------------------
# vision layers
# --------------------------------------------------------------------------------------
def convolution(
    x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray], pad, stride, dilation, group: int
) -> np.ndarray:
    """out[n,o,y,x] = b[o] + sum_{c,i,j} w[o,c,i,j] * xpad[n, g*Cg+c, y*s+i*d, x*s+j*d]."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ph, pw = pad
    sh, sw = stride
    dh, dw = dilation
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (wd + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph : ph + h, pw : pw + wd] = x
    out = np.zeros((n, o, oh, ow))
    og = o // group
    for g in range(group):
        xg = xp[:, g * cg : (g + 1) * cg]
        wg = w[g * og : (g + 1) * og].astype(np.float64)
        for i in range(kh):
            for j in range(kw):
                patch = xg[
                    :,
                    :,
                    i * dh : i * dh + sh * (oh - 1) + 1 : sh,
                    j * dw : j * dw + sw * (ow - 1) + 1 : sw,
                ]
                out[:, g * og : (g + 1) * og] += np.einsum("ncyx,oc->noyx", patch, wg[:, :, i, j])
    if b is not None:
        out += np.reshape(b, (1, o, 1, 1))
    return out


def deconvolution(
    x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray], pad, stride, dilation, group: int
) -> np.ndarray:
    """Transposed convolution: scatter x[n,c,y,x]*w[c,o,i,j] to (y*s+i*d-p, x*s+j*d-p)."""
    n, c, h, wd = x.shape
    cin, og, kh, kw = w.shape
    ph, pw = pad
    sh, sw = stride
    dh, dw = dilation
    fh = sh * (h - 1) + dh * (kh - 1) + 1
    fw = sw * (wd - 1) + dw * (kw - 1) + 1
    full = np.zeros((n, og * group, fh, fw))
    cg = c // group
    for g in range(group):
        xg = x[:, g * cg : (g + 1) * cg].astype(np.float64)
        wg = w[g * cg : (g + 1) * cg].astype(np.float64)
        for i in range(kh):
            for j in range(kw):
                contrib = np.einsum("ncyx,co->noyx", xg, wg[:, :, i, j])
                full[
                    :,
                    g * og : (g + 1) * og,
                    i * dh : i * dh + sh * (h - 1) + 1 : sh,
                    j * dw : j * dw + sw * (wd - 1) + 1 : sw,
                ] += contrib
    out = full[:, :, ph : fh - ph, pw : fw - pw]
    if b is not None:
        out = out + np.reshape(b, (1, -1, 1, 1))
    return out


def _conv_params(p):
    pad = _spatial(p, "pad", 0)
    if one(p, "kernel_h") is not None:
        kernel = [int(one(p, "kernel_h")), int(one(p, "kernel_w"))]
    else:
        kernel = _spatial(p, "kernel_size", 1)
    stride = _spatial(p, "stride", 1)
    dil = _spatial(p, "dilation", 1)
    return kernel, pad, stride, dil, int(one(p, "group", 1))


def _layer_convolution(bottoms, p, blobs, deconv=False):
    _, pad, stride, dil, group = _conv_params(p)
    bias = blobs[1] if one(p, "bias_term", True) and len(blobs) > 1 else None
    fn = deconvolution if deconv else convolution
    return [fn(bottoms[0], blobs[0], bias, pad, stride, dil, group)]


def inner_product(
    x: np.ndarray, w: np.ndarray, b: Optional[np.ndarray], axis: int = 1, transpose: bool = False
) -> np.ndarray:
    """y = flatten_from(axis)(x) @ W^T + b, W (N,K) or (K,N) if transpose."""
    axis = _canon_axis(axis, x.ndim)
    lead = x.shape[:axis]
    flat = x.reshape(int(np.prod(lead)), -1).astype(np.float64)
    w2 = w.reshape(w.shape[-2], w.shape[-1]) if w.ndim > 2 else w
    wm = w2.astype(np.float64) if transpose else w2.astype(np.float64).T
    y = flat @ wm
    if b is not None:
        y = y + np.reshape(b, (1, -1))
    return y.reshape(lead + (y.shape[-1],))


def pooling(x: np.ndarray, method: str, kernel, stride, pad, ceil_mode: bool = True) -> np.ndarray:
    """Caffe pooling (MAX ignores padding; AVE divides by the window clipped to H+pad)."""
    n, c, h, w = x.shape
    kh, kw = kernel
    sh, sw = stride
    ph, pw = pad
    rnd = math.ceil if ceil_mode else math.floor
    oh = int(rnd((h + 2 * ph - kh) / sh)) + 1
    ow = int(rnd((w + 2 * pw - kw) / sw)) + 1
    if ph or pw:
        if (oh - 1) * sh >= h + ph:
            oh -= 1
        if (ow - 1) * sw >= w + pw:
            ow -= 1
    out = np.zeros((n, c, oh, ow))
    for y in range(oh):
        for xx in range(ow):
            hs, ws = y * sh - ph, xx * sw - pw
            if method == "MAX":
                he, we = min(hs + kh, h), min(ws + kw, w)
                hs, ws = max(hs, 0), max(ws, 0)
                out[:, :, y, xx] = x[:, :, hs:he, ws:we].max(axis=(2, 3))
            else:
                he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
                size = (he - hs) * (we - ws)
                hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
                out[:, :, y, xx] = x[:, :, hs:he, ws:we].astype(np.float64).sum(axis=(2, 3)) / size
    return out


def _layer_pooling(bottoms, p, blobs):
    x = bottoms[0]
    method = one(p, "pool", "MAX")
    method = {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}.get(method, method)
    if method == "STOCHASTIC":
        raise NotImplementedError("STOCHASTIC pooling")
    if one(p, "global_pooling", False):
        kernel, stride, pad = [x.shape[2], x.shape[3]], [1, 1], [0, 0]
    else:
        kernel = (
            [int(one(p, "kernel_h")), int(one(p, "kernel_w"))]
            if one(p, "kernel_h") is not None
            else [int(one(p, "kernel_size"))] * 2
        )
        stride = _spatial(p, "stride", 1)
        pad = _spatial(p, "pad", 0)
    rm = one(p, "round_mode", "CEIL")
    ceil_mode = rm in ("CEIL", 0)
    return [pooling(x, method, kernel, stride, pad, ceil_mode)]


def lrn(
    x: np.ndarray,
    local_size: int = 5,
    alpha: float = 1.0,
    beta: float = 0.75,
    k: float = 1.0,
    region: str = "ACROSS_CHANNELS",
) -> np.ndarray:
    """ACROSS: x / (k + alpha/n * sum_window x^2)^beta.

    WITHIN: x * (1 + alpha * avepool(x^2))^-beta."""
    x = x.astype(np.float64)
    n = local_size
    if region in ("ACROSS_CHANNELS", 0):
        pre = (n - 1) // 2
        sq = np.pad(x * x, ((0, 0), (pre, n - 1 - pre), (0, 0), (0, 0)))
        acc = sum(sq[:, i : i + x.shape[1]] for i in range(n))
        return x / np.power(k + alpha / n * acc, beta)
    pad = (n - 1) // 2
    avg = pooling(x * x, "AVE", [n, n], [1, 1], [pad, pad])
    return x * np.power(1.0 + alpha * avg, -beta)


def _layer_lrn(bottoms, p, blobs):
    return [
        lrn(
            bottoms[0],
            int(one(p, "local_size", 5)),
            float(one(p, "alpha", 1.0)),
            float(one(p, "beta", 0.75)),
            float(one(p, "k", 1.0)),
            one(p, "norm_region", "ACROSS_CHANNELS"),
        )
    ]


# --------------------------------------------------------------------------------------
# activations / neuron layers
# --------------------------------------------------------------------------------------
def _bnll(x):
    return np.where(x > 0, x + np.log1p(np.exp(-np.abs(x))), np.log1p(np.exp(np.minimum(x, 0))))


def _power(x, power=1.0, scale=1.0, shift=0.0):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.power(shift + scale * x, power)


def _exp(x, base=-1.0, scale=1.0, shift=0.0):
    """base^(shift + scale*x), base -1 = e."""
    lb = 1.0 if base == -1 else math.log(base)
    return np.exp(lb * (shift + scale * x))


def _log(x, base=-1.0, scale=1.0, shift=0.0):
    """log_base(shift + scale*x), base -1 = e."""
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.log(shift + scale * x)
    return y if base == -1 else y / math.log(base)


def _prelu(x, slope, shared):
    s = np.reshape(slope, ()) if shared else np.reshape(slope, (1, -1) + (1,) * (x.ndim - 2))
    return np.maximum(x, 0) + s * np.minimum(x, 0)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    axis = _canon_axis(axis, x.ndim)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _elementwise(fn: Callable[[np.ndarray, Dict[str, list]], np.ndarray]):
    def layer(bottoms, p, blobs):
        return [fn(bottoms[0].astype(np.float64), p)]

    return layer


# --------------------------------------------------------------------------------------
# normalization
# --------------------------------------------------------------------------------------
def batch_norm(x, mean_blob, var_blob, factor_blob, eps=1e-5, use_global_stats=True):
    """(x - mean) / sqrt(var + eps); global: mean = blob0/s, var = blob1/s (s==0 -> 0)."""
    x = x.astype(np.float64)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if use_global_stats:
        s = float(np.reshape(factor_blob, (-1,))[0])
        f = 0.0 if s == 0 else 1.0 / s
        mean = np.reshape(mean_blob, shape) * f
        var = np.reshape(var_blob, shape) * f
    else:
        red = (0,) + tuple(range(2, x.ndim))
        mean = x.mean(axis=red, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=red, keepdims=True)
    return (x - mean) / np.sqrt(var + eps)


def _broadcast_param(x_shape, param, axis, what="scale"):
    axis = _canon_axis(axis, len(x_shape)) if len(x_shape) else 0
    param = np.asarray(param, np.float64)
    if param.size == 1 and param.ndim <= 1:
        return np.reshape(param, ())
    pshape = param.shape
    if tuple(x_shape[axis : axis + len(pshape)]) != tuple(pshape):
        raise ValueError(f"{what} shape {pshape} does not match bottom {x_shape} at axis {axis}")
    return np.reshape(param, (1,) * axis + pshape + (1,) * (len(x_shape) - axis - len(pshape)))


def _layer_scale(bottoms, p, blobs):
    x = bottoms[0].astype(np.float64)
    axis = int(one(p, "axis", 1))
    if len(bottoms) > 1:
        scale, rest = bottoms[1], blobs
    else:
        scale, rest = blobs[0], blobs[1:]
        num_axes = int(one(p, "num_axes", 1))
        ax = _canon_axis(axis, x.ndim)
        expect = x.shape[ax:] if num_axes == -1 else x.shape[ax : ax + num_axes]
        scale = np.reshape(scale, expect)
    y = x * _broadcast_param(x.shape, scale, axis)
    if one(p, "bias_term", False):
        y = y + _broadcast_param(x.shape, np.reshape(rest[0], np.shape(scale)), axis, "bias")
    return [y]


def _layer_bias(bottoms, p, blobs):
    x = bottoms[0].astype(np.float64)
    axis = int(one(p, "axis", 1))
    if len(bottoms) > 1:
        bias = bottoms[1]
    else:
        num_axes = int(one(p, "num_axes", 1))
        ax = _canon_axis(axis, x.ndim)
        expect = x.shape[ax:] if num_axes == -1 else x.shape[ax : ax + num_axes]
        bias = np.reshape(blobs[0], expect)
    return [x + _broadcast_param(x.shape, bias, axis, "bias")]


def mvn(x, normalize_variance=True, across_channels=False, eps=1e-9):
    """BVLC: y = (x - mean) / (sqrt(E[x^2] - mean^2) + eps)  (eps OUTSIDE the sqrt)."""
    x = x.astype(np.float64)
    red = tuple(range(1, x.ndim)) if across_channels else tuple(range(2, x.ndim))
    mean = x.mean(axis=red, keepdims=True)
    y = x - mean
    if normalize_variance:
        var = (x * x).mean(axis=red, keepdims=True) - mean * mean
        y = y / (np.sqrt(np.maximum(var, 0)) + eps)
    return y


def normalize(x, scale, across_spatial=True, channel_shared=True, eps=1e-10):
    """SSD Normalize: x / sqrt(sum x^2 + eps) (over C,H,W or over C) * scale."""
    x = x.astype(np.float64)
    red = tuple(range(1, x.ndim)) if across_spatial else (1,)
    y = x / np.sqrt((x * x).sum(axis=red, keepdims=True) + eps)
    if scale is None:
        return y
    s = (
        np.reshape(scale, ())
        if channel_shared
        else np.reshape(scale, (1, -1) + (1,) * (x.ndim - 2))
    )
    return y * s


# --------------------------------------------------------------------------------------
# shape / routing layers
# --------------------------------------------------------------------------------------
def _layer_eltwise(bottoms, p, blobs):
    op = one(p, "operation", "SUM")
    op = {0: "PROD", 1: "SUM", 2: "MAX"}.get(op, op)
    xs = [b.astype(np.float64) for b in bottoms]
    if op == "SUM":
        coeff = [float(c) for c in many(p, "coeff")] or [1.0] * len(xs)
        return [sum(c * v for c, v in zip(coeff, xs))]
    if op == "PROD":
        out = xs[0]
        for v in xs[1:]:
            out = out * v
        return [out]
    out = xs[0]
    for v in xs[1:]:
        out = np.maximum(out, v)
    return [out]


def _layer_concat(bottoms, p, blobs):
    axis = (
        one(p, "concat_dim")
        if one(p, "axis") is None and one(p, "concat_dim") is not None
        else one(p, "axis", 1)
    )
    return [np.concatenate(bottoms, axis=_canon_axis(int(axis), bottoms[0].ndim))]


def slice_blob(x, n_tops, axis=1, slice_points=()):
    axis = _canon_axis(axis, x.ndim)
    if slice_points:
        bounds = [0] + list(slice_points) + [x.shape[axis]]
    else:
        if x.shape[axis] % n_tops:
            raise ValueError("equal slice needs divisible axis")
        step = x.shape[axis] // n_tops
        bounds = [i * step for i in range(n_tops + 1)]
    return [np.take(x, range(bounds[i], bounds[i + 1]), axis=axis) for i in range(len(bounds) - 1)]


def _layer_slice(bottoms, p, blobs, n_tops=1):
    axis = one(p, "axis")
    if axis is None:
        axis = one(p, "slice_dim", 1)
    return slice_blob(bottoms[0], n_tops, int(axis), [int(v) for v in many(p, "slice_point")])


def _layer_flatten(bottoms, p, blobs):
    x = bottoms[0]
    a = _canon_axis(int(one(p, "axis", 1)), x.ndim)
    e = _canon_axis(int(one(p, "end_axis", -1)), x.ndim)
    return [x.reshape(x.shape[:a] + (int(np.prod(x.shape[a : e + 1])),) + x.shape[e + 1 :])]


def reshape(x, dims, axis=0, num_axes=-1):
    nd = x.ndim
    start = axis if axis >= 0 else nd + axis + 1
    end = nd if num_axes == -1 else start + num_axes
    new = []
    for i, d in enumerate(dims):
        new.append(x.shape[start + i] if d == 0 else d)
    shape = list(x.shape[:start]) + new + list(x.shape[end:])
    return x.reshape(shape)


def _layer_reshape(bottoms, p, blobs):
    shape = one(p, "shape", {})
    return [
        reshape(
            bottoms[0],
            [int(d) for d in many(shape, "dim")],
            int(one(p, "axis", 0)),
            int(one(p, "num_axes", -1)),
        )
    ]


def crop(x, ref_shape, axis=2, offsets=()):
    axis = _canon_axis(axis, x.ndim)
    idx = []
    for i in range(x.ndim):
        if i < axis:
            idx.append(slice(None))
            continue
        off = 0 if not offsets else (offsets[0] if len(offsets) == 1 else offsets[i - axis])
        if off + ref_shape[i] > x.shape[i]:
            raise ValueError("crop out of range")
        idx.append(slice(off, off + ref_shape[i]))
    return x[tuple(idx)]


def _layer_crop(bottoms, p, blobs):
    return [
        crop(
            bottoms[0],
            bottoms[1].shape,
            int(one(p, "axis", 2)),
            [int(v) for v in many(p, "offset")],
        )
    ]


def reduction(x, operation="SUM", axis=0, coeff=1.0):
    """Reduce all axes from ``axis`` on; output shape x.shape[:axis]."""
    axis = _canon_axis(axis, x.ndim)
    op = {1: "SUM", 2: "ASUM", 3: "SUMSQ", 4: "MEAN"}.get(operation, operation)
    flat = x.astype(np.float64).reshape(x.shape[:axis] + (-1,))
    if op == "SUM":
        r = flat.sum(-1)
    elif op == "ASUM":
        r = np.abs(flat).sum(-1)
    elif op == "SUMSQ":
        r = (flat * flat).sum(-1)
    else:
        r = flat.mean(-1)
    return np.asarray(r * coeff).reshape(x.shape[:axis])


def _caffe_top_k(a, k):
    """Indices of the k largest along the last axis, ties by LARGER index first (BVLC sorts
    (value, index) pairs with std::greater)."""
    n = a.shape[-1]
    order = np.argsort(-a[..., ::-1], axis=-1, kind="stable")[..., :k]
    return n - 1 - order


def argmax(x, out_max_val=False, top_k=1, axis=None):
    """BVLC ArgMax; ties ranked by larger index first (std::greater on (value, index))."""
    x = x.astype(np.float64)
    if axis is not None:
        axis = _canon_axis(axis, x.ndim)
        moved = np.moveaxis(x, axis, -1)
        idx = _caffe_top_k(moved, top_k)
        val = np.take_along_axis(moved, idx, -1)
        return np.moveaxis(val if out_max_val else idx.astype(np.float64), -1, axis)
    n = x.shape[0]
    flat = x.reshape(n, -1)
    idx = _caffe_top_k(flat, top_k)
    val = np.take_along_axis(flat, idx, -1)
    nd = max(x.ndim, 3)
    shape = [n, 2 if out_max_val else 1, top_k] + [1] * (nd - 3)
    out = np.concatenate([idx, val], axis=1) if out_max_val else idx.astype(np.float64)
    return out.reshape(shape)


def interp(x, height=None, width=None, zoom_factor=None, shrink_factor=None, pad_beg=0, pad_end=0):
    """DeepLab Interp: align-corners bilinear over the (cropped by -pad) input window."""
    n, c, h, w = x.shape
    he, we = h + pad_beg + pad_end, w + pad_beg + pad_end
    if shrink_factor is not None and zoom_factor is None:
        oh, ow = (he - 1) // shrink_factor + 1, (we - 1) // shrink_factor + 1
    elif zoom_factor is not None and shrink_factor is None:
        oh, ow = he + (he - 1) * (zoom_factor - 1), we + (we - 1) * (zoom_factor - 1)
    elif height is not None and width is not None:
        oh, ow = height, width
    elif shrink_factor is not None and zoom_factor is not None:
        oh, ow = (he - 1) // shrink_factor + 1, (we - 1) // shrink_factor + 1
        oh, ow = oh + (oh - 1) * (zoom_factor - 1), ow + (ow - 1) * (zoom_factor - 1)
    else:
        raise ValueError("Interp needs height/width, zoom_factor or shrink_factor")
    src = x[:, :, -pad_beg : -pad_beg + he, -pad_beg : -pad_beg + we].astype(np.float64)

    def coords(n_in, n_out):
        # Caffe computes the ratio and positions in float32
        r = np.float32((n_in - 1) / (n_out - 1)) if n_out > 1 else np.float32(0)
        pos = (r * np.arange(n_out, dtype=np.float32)).astype(np.float32)
        i0 = pos.astype(np.int64)
        step = (i0 < n_in - 1).astype(np.int64)
        lam = (pos - i0.astype(np.float32)).astype(np.float64)
        return i0, i0 + step, lam

    y0, y1, ly = coords(he, oh)
    x0, x1, lx = coords(we, ow)
    ly = ly[:, None]
    top = src[:, :, y0][:, :, :, x0] * (1 - lx) + src[:, :, y0][:, :, :, x1] * lx
    bot = src[:, :, y1][:, :, :, x0] * (1 - lx) + src[:, :, y1][:, :, :, x1] * lx
    return top * (1 - ly) + bot * ly


def _layer_interp(bottoms, p, blobs):
    def opt(name):
        v = one(p, name)
        return None if v is None else int(v)

    return [
        interp(
            bottoms[0],
            opt("height"),
            opt("width"),
            opt("zoom_factor"),
            opt("shrink_factor"),
            int(one(p, "pad_beg", 0)),
            int(one(p, "pad_end", 0)),
        )
    ]


def upsample_nearest(x, out_h, out_w):
    """Nearest neighbour: out[i] = x[floor(i * H / out_h)] (= repeat for integer scales)."""
    h, w = x.shape[2], x.shape[3]
    iy = (np.arange(out_h) * h) // out_h
    ix = (np.arange(out_w) * w) // out_w
    return x[:, :, iy][:, :, :, ix]


def _layer_upsample(bottoms, p, blobs):
    x = bottoms[0]
    if one(p, "upsample_h") is not None:
        oh, ow = int(one(p, "upsample_h")), int(one(p, "upsample_w"))
    else:
        sh = int(one(p, "scale_h", one(p, "scale", 2)))
        sw = int(one(p, "scale_w", one(p, "scale", 2)))
        oh, ow = x.shape[2] * sh, x.shape[3] * sw
    return [upsample_nearest(x, oh, ow)]


def shuffle_channel(x, group):
    n, c = x.shape[:2]
    return x.reshape((n, group, c // group) + x.shape[2:]).swapaxes(1, 2).reshape(x.shape)


def permute(x, order):
    order = [int(o) for o in order]
    order += [i for i in range(x.ndim) if i not in order]
    return np.transpose(x, order)


def tile(x, axis=1, tiles=1):
    axis = _canon_axis(axis, x.ndim)
    reps = [1] * x.ndim
    reps[axis] = tiles
    return np.tile(x, reps)


def embed(idx, weight, bias=None):
    """y[..., :] = W[idx] (+ b); output shape idx.shape + (num_output,)."""
    ii = idx.astype(np.int64)
    if np.any(ii != idx) or np.any(ii < 0) or np.any(ii >= weight.shape[0]):
        raise ValueError("Embed indices must be integers in [0, input_dim)")
    y = weight.astype(np.float64)[ii]
    return y if bias is None else y + np.reshape(bias, (-1,))


# --------------------------------------------------------------------------------------
# dispatch table: type -> fn(bottoms, param_dict, blobs) -> tops
# --------------------------------------------------------------------------------------
def _f(p, name, default):
    return float(one(p, name, default))


LAYERS: Dict[str, Callable[..., List[np.ndarray]]] = {
    "Convolution": _layer_convolution,
    "Deconvolution": lambda b, p, w: _layer_convolution(b, p, w, deconv=True),
    "InnerProduct": lambda b, p, w: [
        inner_product(
            b[0],
            w[0],
            w[1] if one(p, "bias_term", True) and len(w) > 1 else None,
            int(one(p, "axis", 1)),
            bool(one(p, "transpose", False)),
        )
    ],
    "Pooling": _layer_pooling,
    "LRN": _layer_lrn,
    "ReLU": _elementwise(
        lambda x, p: np.maximum(x, 0) + _f(p, "negative_slope", 0.0) * np.minimum(x, 0)
    ),
    "PReLU": lambda b, p, w: [
        _prelu(
            b[0].astype(np.float64),
            w[0],
            bool(one(p, "channel_shared", False)) or np.size(w[0]) == 1,
        )
    ],
    "ELU": _elementwise(
        lambda x, p: np.where(x > 0, x, _f(p, "alpha", 1.0) * (np.exp(np.minimum(x, 0)) - 1))
    ),
    "Sigmoid": _elementwise(lambda x, p: _sigmoid(x)),
    "TanH": _elementwise(lambda x, p: np.tanh(x)),
    "AbsVal": _elementwise(lambda x, p: np.abs(x)),
    "BNLL": _elementwise(lambda x, p: _bnll(x)),
    "Power": _elementwise(
        lambda x, p: _power(x, _f(p, "power", 1.0), _f(p, "scale", 1.0), _f(p, "shift", 0.0))
    ),
    "Exp": _elementwise(
        lambda x, p: _exp(x, _f(p, "base", -1.0), _f(p, "scale", 1.0), _f(p, "shift", 0.0))
    ),
    "Log": _elementwise(
        lambda x, p: _log(x, _f(p, "base", -1.0), _f(p, "scale", 1.0), _f(p, "shift", 0.0))
    ),
    # Caffe compares float blobs with a float threshold: compare in float32 too.
    "Threshold": _elementwise(
        lambda x, p: (x.astype(np.float32) > np.float32(_f(p, "threshold", 0.0))).astype(np.float64)
    ),
    "Clip": _elementwise(
        lambda x, p: np.minimum(np.maximum(x, _f(p, "min", 0.0)), _f(p, "max", 0.0))
    ),
    "Swish": _elementwise(lambda x, p: x * _sigmoid(_f(p, "beta", 1.0) * x)),
    "ReLU6": _elementwise(lambda x, p: np.minimum(np.maximum(x, 0), 6.0)),
    "Softmax": lambda b, p, w: [softmax(b[0].astype(np.float64), int(one(p, "axis", 1)))],
    "BatchNorm": lambda b, p, w: [
        batch_norm(
            b[0], w[0], w[1], w[2], _f(p, "eps", 1e-5), bool(one(p, "use_global_stats", True))
        )
    ],
    "Scale": _layer_scale,
    "Bias": _layer_bias,
    "MVN": lambda b, p, w: [
        mvn(
            b[0],
            bool(one(p, "normalize_variance", True)),
            bool(one(p, "across_channels", False)),
            _f(p, "eps", 1e-9),
        )
    ],
    "Normalize": lambda b, p, w: [
        normalize(
            b[0],
            w[0] if w else None,
            bool(one(p, "across_spatial", True)),
            bool(one(p, "channel_shared", True)),
            _f(p, "eps", 1e-10),
        )
    ],
    "Eltwise": _layer_eltwise,
    "Concat": _layer_concat,
    "Flatten": _layer_flatten,
    "Reshape": _layer_reshape,
    "Crop": _layer_crop,
    "Dropout": lambda b, p, w: [b[0]],
    "Tile": lambda b, p, w: [tile(b[0], int(one(p, "axis", 1)), int(one(p, "tiles", 1)))],
    "Reduction": lambda b, p, w: [
        reduction(b[0], one(p, "operation", "SUM"), int(one(p, "axis", 0)), _f(p, "coeff", 1.0))
    ],
    "ArgMax": lambda b, p, w: [
        argmax(
            b[0],
            bool(one(p, "out_max_val", False)),
            int(one(p, "top_k", 1)),
            None if one(p, "axis") is None else int(one(p, "axis")),
        )
    ],
    "Embed": lambda b, p, w: [
        embed(b[0], w[0], w[1] if one(p, "bias_term", True) and len(w) > 1 else None)
    ],
    "Permute": lambda b, p, w: [permute(b[0], many(p, "order"))],
    "Interp": _layer_interp,
    "Upsample": _layer_upsample,
    "ShuffleChannel": lambda b, p, w: [shuffle_channel(b[0], int(one(p, "group", 1)))],
}
LAYERS["DepthwiseConvolution"] = LAYERS["ConvolutionDepthwise"] = _layer_convolution

# prototxt sub-message holding each type's hyper-parameters
PARAM_FIELD = {
    "Convolution": "convolution_param",
    "Deconvolution": "convolution_param",
    "DepthwiseConvolution": "convolution_param",
    "ConvolutionDepthwise": "convolution_param",
    "InnerProduct": "inner_product_param",
    "Pooling": "pooling_param",
    "LRN": "lrn_param",
    "ReLU": "relu_param",
    "PReLU": "prelu_param",
    "ELU": "elu_param",
    "Power": "power_param",
    "Exp": "exp_param",
    "Log": "log_param",
    "Threshold": "threshold_param",
    "Clip": "clip_param",
    "Swish": "swish_param",
    "Softmax": "softmax_param",
    "BatchNorm": "batch_norm_param",
    "Scale": "scale_param",
    "Bias": "bias_param",
    "MVN": "mvn_param",
    "Normalize": "norm_param",
    "Eltwise": "eltwise_param",
    "Concat": "concat_param",
    "Slice": "slice_param",
    "Flatten": "flatten_param",
    "Reshape": "reshape_param",
    "Crop": "crop_param",
    "Tile": "tile_param",
    "Reduction": "reduction_param",
    "ArgMax": "argmax_param",
    "Embed": "embed_param",
    "Permute": "permute_param",
    "Interp": "interp_param",
    "Upsample": "upsample_param",
    "ShuffleChannel": "shuffle_channel_param",
}

V1_TYPES = {
    "ABSVAL": "AbsVal",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution",
    "DROPOUT": "Dropout",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SOFTMAX": "Softmax",
    "SPLIT": "Split",
    "TANH": "TanH",
    "THRESHOLD": "Threshold",
    "SLICE": "Slice",
    "SILENCE": "Silence",
}

_SKIP = {"Input", "Silence", "Data", "DummyData", "MemoryData", "ImageData", "HDF5Data"}


def _excluded_in_test(layer: Dict[str, list]) -> bool:
    def phase(rule):
        return one(rule, "phase")

    if one(layer, "phase") in ("TRAIN", 0):
        return True
    inc = many(layer, "include")
    if inc and not any(phase(r) in (None, "TEST", 1) for r in inc):
        return True
    return any(phase(r) in ("TEST", 1) for r in many(layer, "exclude"))


def run_net(
    prototxt: str, params: Dict[str, Sequence[np.ndarray]], inputs: Dict[str, np.ndarray]
) -> Dict[str, np.ndarray]:
    """Forward a whole net: returns every top (value after its last in-place writer), float32.

    ``params`` maps layer name -> its blobs (Caffe layouts); ``inputs`` maps input blob -> NCHW.
    """
    net = parse_prototxt(prototxt)
    blobs: Dict[str, np.ndarray] = {k: np.asarray(v, np.float32) for k, v in inputs.items()}
    layers = many(net, "layer") or many(net, "layers")
    for layer in layers:
        ltype = one(layer, "type")
        ltype = V1_TYPES.get(ltype, ltype)
        if ltype in _SKIP or _excluded_in_test(layer):
            continue
        name = one(layer, "name", "")
        bottoms = [blobs[b] for b in many(layer, "bottom")]
        tops = many(layer, "top")
        p = one(layer, PARAM_FIELD.get(ltype, "_none"), {})
        w = [np.asarray(a, np.float64) for a in params.get(name, [])]
        if ltype == "Split":
            outs = [bottoms[0]] * len(tops)
        elif ltype == "Slice":
            outs = _layer_slice(bottoms, p, w, n_tops=len(tops))
        elif ltype in LAYERS:
            outs = LAYERS[ltype](bottoms, p, w)
        else:
            raise NotImplementedError(f"reference has no layer type {ltype!r}")
        for t, v in zip(tops, outs):
            blobs[t] = np.asarray(v).astype(np.float32)
    return blobs
