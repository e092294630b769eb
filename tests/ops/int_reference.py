"""numpy int64 reference of the fixed-point layers, written from the spec (no TF).

acc = exact integer conv / depthwise / matmul;  F = max(fl_x + fl_w, fl_b);
t = acc·2^(F − fl_x − fl_w) + b·2^(F − fl_b);  y = clamp(round(t / 2^(F − fl_out))).
"""

from __future__ import annotations

import numpy as np


def tf_same_pads(size: int, k: int, stride: int, dilation: int):
    eff = (k - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def conv_pads(x_shape, w_shape, strides, dilations, padding):
    if padding == "VALID":
        return (0, 0), (0, 0)
    if padding == "SAME":
        return (tf_same_pads(x_shape[1], w_shape[0], strides[0], dilations[0]),
                tf_same_pads(x_shape[2], w_shape[1], strides[1], dilations[1]))
    return tuple(padding[0]), tuple(padding[1])


def _patches(x, w_shape, strides, dilations, padding):
    (t, b), (left, r) = conv_pads(x.shape, w_shape, strides, dilations, padding)
    xp = np.pad(x.astype(np.int64), [(0, 0), (t, b), (left, r), (0, 0)])
    kh_n, kw_n = w_shape[0], w_shape[1]
    oh = (xp.shape[1] - ((kh_n - 1) * dilations[0] + 1)) // strides[0] + 1
    ow = (xp.shape[2] - ((kw_n - 1) * dilations[1] + 1)) // strides[1] + 1
    for kh in range(kh_n):
        for kw in range(kw_n):
            h0, w0 = kh * dilations[0], kw * dilations[1]
            yield kh, kw, xp[:, h0:h0 + strides[0] * (oh - 1) + 1:strides[0],
                             w0:w0 + strides[1] * (ow - 1) + 1:strides[1], :]


def conv2d_acc(x, w, strides=(1, 1), dilations=(1, 1), padding="VALID"):
    acc = 0
    for kh, kw, patch in _patches(x, w.shape, strides, dilations, padding):
        acc = acc + np.tensordot(patch, w[kh, kw].astype(np.int64), axes=[[3], [0]])
    return acc


def depthwise_acc(x, w, strides=(1, 1), dilations=(1, 1), padding="VALID"):
    acc = 0
    c, m = w.shape[2], w.shape[3]
    for kh, kw, patch in _patches(x, w.shape, strides, dilations, padding):
        prod = patch[..., :, None] * w[kh, kw].astype(np.int64)[None, None, None]
        acc = acc + prod.reshape(patch.shape[:3] + (c * m,))
    return acc


def matmul_acc(x, w):
    return np.tensordot(x.astype(np.int64), w.astype(np.int64), axes=[[-1], [0]])


def requantize(acc, acc_frac, out_frac, out_bitwidth=8, out_signed=True, rounding="nearest",
               bias=None, bias_frac=None):
    acc = np.asarray(acc, np.int64)
    fa = np.broadcast_to(np.asarray(acc_frac, np.int64), acc.shape[-1:])
    big = np.maximum(fa, bias_frac) if bias is not None else fa
    t = acc * (2 ** (big - fa))
    if bias is not None:
        t = t + np.asarray(bias, np.int64) * 2 ** (big - bias_frac)
    s = np.broadcast_to(big - out_frac, t.shape)
    d = 2 ** np.clip(s, 0, 62)
    q = np.floor_divide(t, d)  # floor(t / d)
    twice_rem = 2 * (t - q * d)
    if rounding == "half_up":
        q = q + (twice_rem >= d)
    elif rounding == "nearest_even":
        q = q + ((twice_rem > d) | ((twice_rem == d) & (q % 2 == 1)))
    elif rounding == "nearest":
        mag = np.floor_divide(np.abs(t) + d // 2, d)
        q = np.sign(t) * mag
    else:
        raise ValueError(rounding)
    y = np.where(s > 0, q, t * 2 ** np.clip(-s, 0, 40))
    lo, hi = ((-(2 ** (out_bitwidth - 1)), 2 ** (out_bitwidth - 1) - 1) if out_signed
              else (0, 2**out_bitwidth - 1))
    return np.clip(y, lo, hi)
