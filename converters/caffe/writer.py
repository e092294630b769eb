"""Write a small Keras CNN as a Caffe net (deploy prototxt + binary caffemodel).

The inverse of the importer, for nets kerasq makes itself (``kerasq demo`` writes its
trained CNN with it and imports it back). Supported: a Sequential/linear functional model of Conv2D (stride, ``valid`` or
odd-kernel ``same`` padding, optional relu), MaxPooling2D / AveragePooling2D (square,
``valid``, sizes divisible by the stride), ReLU, Flatten, Dense (optional relu /
softmax), Softmax, Dropout (skipped). Layouts: Keras kernels (kh, kw, in, out) become Caffe
(out, in, kh, kw); a Dense after Flatten has its input rows permuted from Keras's HWC to
Caffe's CHW flatten order.

Example:
    >>> write_caffe(model, "net.prototxt", "net.caffemodel")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Tuple, Union

import numpy as np

from kerasq._io import atomic_output
from kerasq.errors import UnsupportedLayerError

PathLike = Union[str, "os.PathLike[str]"]


def _pb2() -> Any:
    from kerasq.converters.caffe.proto import caffe_pb2

    return caffe_pb2


def _blob(pb2: Any, array: np.ndarray) -> Any:
    blob = pb2.BlobProto()
    blob.shape.dim.extend(int(d) for d in array.shape)
    blob.data.extend(np.asarray(array, np.float32).ravel().tolist())
    return blob


def _activation_layers(pb2: Any, net: Any, name: str, top: str, activation: str) -> None:
    if activation == "linear":
        return
    layer = net.layer.add(name=f"{name}_{activation}", bottom=[top], top=[top])
    if activation == "relu":
        layer.type = "ReLU"
    elif activation == "softmax":
        layer.type = "Softmax"
        layer.top[0] = "prob"
    else:
        raise UnsupportedLayerError(f"activation {activation!r} is not written", layer=name)


def _build(model: Any) -> Tuple[Any, Any]:
    """(deploy NetParameter, weights NetParameter) for ``model``."""
    pb2 = _pb2()
    deploy = pb2.NetParameter(name=model.name)
    _, h, w, c = model.input_shape
    inp = deploy.layer.add(name="data", type="Input", top=["data"])
    inp.input_param.shape.add().dim.extend([1, c, h, w])
    top = "data"
    shape: Optional[Tuple[int, int, int]] = (h, w, c)  # NHWC spatial shape of `top`
    flattened_from: Optional[Tuple[int, int, int]] = None
    for layer in (
        model.layers[1:] if type(model.layers[0]).__name__ == "InputLayer" else model.layers
    ):
        kind = type(layer).__name__
        cfg = layer.get_config()
        name = layer.name
        if kind == "Conv2D":
            kh, kw = cfg["kernel_size"]
            sh, sw = cfg["strides"]
            if cfg["padding"] == "same":
                if kh % 2 == 0 or kw % 2 == 0 or (sh, sw) != (1, 1):
                    raise UnsupportedLayerError(
                        "'same' padding is written for odd kernels with stride 1 only", layer=name
                    )
                pad = (kh // 2, kw // 2)
            else:
                pad = (0, 0)
            if tuple(cfg.get("dilation_rate", (1, 1))) != (1, 1) or cfg.get("groups", 1) != 1:
                raise UnsupportedLayerError("dilated / grouped Conv2D is not written", layer=name)
            lp = deploy.layer.add(name=name, type="Convolution", bottom=[top], top=[name])
            p = lp.convolution_param
            p.num_output = cfg["filters"]
            p.kernel_h, p.kernel_w = kh, kw
            p.stride_h, p.stride_w = sh, sw
            p.pad_h, p.pad_w = pad
            p.bias_term = bool(cfg["use_bias"])
            top = name
            h = (shape[0] + 2 * pad[0] - kh) // sh + 1
            w = (shape[1] + 2 * pad[1] - kw) // sw + 1
            shape = (h, w, cfg["filters"])
            _activation_layers(pb2, deploy, name, top, cfg["activation"])
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            (ph, pw), (sh, sw) = cfg["pool_size"], cfg["strides"]
            if (
                cfg["padding"] != "valid"
                or ph != pw
                or (shape[0] - ph) % sh
                or (shape[1] - pw) % sw
            ):
                raise UnsupportedLayerError(
                    "pooling is written for square 'valid' windows that tile the input exactly",
                    layer=name,
                )
            lp = deploy.layer.add(name=name, type="Pooling", bottom=[top], top=[name])
            lp.pooling_param.pool = (
                pb2.PoolingParameter.MAX if kind == "MaxPooling2D" else pb2.PoolingParameter.AVE
            )
            lp.pooling_param.kernel_size = ph
            lp.pooling_param.stride = sh
            top = name
            shape = ((shape[0] - ph) // sh + 1, (shape[1] - pw) // sw + 1, shape[2])
        elif kind == "ReLU":
            deploy.layer.add(name=name, type="ReLU", bottom=[top], top=[top])
        elif kind == "Softmax":
            deploy.layer.add(name=name, type="Softmax", bottom=[top], top=["prob"])
            top = "prob"
        elif kind == "Dropout":
            continue
        elif kind == "Flatten":
            flattened_from = shape
            lp = deploy.layer.add(name=name, type="Flatten", bottom=[top], top=[name])
            top = name
        elif kind == "Dense":
            lp = deploy.layer.add(name=name, type="InnerProduct", bottom=[top], top=[name])
            lp.inner_product_param.num_output = cfg["units"]
            lp.inner_product_param.bias_term = bool(cfg["use_bias"])
            top = name
            _activation_layers(pb2, deploy, name, top, cfg["activation"])
            shape = None
        else:
            raise UnsupportedLayerError(
                f"{kind} is not written by the demo's Caffe writer", layer=name
            )
        if kind == "Dense":
            layer._kerasq_flattened_from = flattened_from  # used for weight order below
            flattened_from = None
    weights = pb2.NetParameter()
    weights.CopyFrom(deploy)
    by_name = {layer.name: layer for layer in model.layers}
    for lp in weights.layer:
        layer = by_name.get(lp.name)
        if layer is None or not layer.weights:
            continue
        values = layer.get_weights()
        if lp.type == "Convolution":
            blobs: List[np.ndarray] = [values[0].transpose(3, 2, 0, 1)]
        else:
            kernel = values[0]
            source = getattr(layer, "_kerasq_flattened_from", None)
            if source is not None:  # Keras flattened HWC, Caffe flattens CHW
                fh, fw, fc = source
                kernel = (
                    kernel.reshape(fh, fw, fc, -1).transpose(2, 0, 1, 3).reshape(fh * fw * fc, -1)
                )
            blobs = [kernel.T]
        if len(values) > 1:
            blobs.append(values[1])
        lp.blobs.extend(_blob(pb2, b) for b in blobs)
    return deploy, weights


def write_caffe(model: Any, prototxt: PathLike, caffemodel: PathLike) -> None:
    """Write ``model`` as ``prototxt`` (text deploy net) and ``caffemodel`` (binary weights).

    Both files are written atomically. Raises :class:`UnsupportedLayerError` for layers
    outside the supported set.
    """
    from google.protobuf import text_format

    deploy, weights = _build(model)
    with atomic_output(prototxt) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text_format.MessageToString(deploy))
    with atomic_output(caffemodel) as tmp:
        with open(tmp, "wb") as f:
            f.write(weights.SerializeToString())


__all__ = ["write_caffe"]
