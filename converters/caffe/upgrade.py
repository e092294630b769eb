"""Upgrading legacy nets to the V2 form kerasq lowers (what Caffe's ``upgrade_proto.cpp`` does).

* V1 nets (``layers { type: CONVOLUTION ... }``, enum types) become V2 ``layer`` entries
  with string types; the per-kind ``*_param`` messages are copied by field name.
* V0 layers (a ``V0LayerParameter`` nested in field 1 of a V1 layer) are translated
  field by field; a V0 ``padding`` layer is folded into the convolution it feeds.
* The legacy net-level inputs (``input:`` + ``input_dim:`` x4, or ``input:`` +
  ``input_shape {}``) become ``Input`` layers placed first, in order.

Example:
    >>> from kerasq.converters.caffe.reader import parse_prototxt_text
    >>> net = parse_prototxt_text('input: "data" input_dim: 1 input_dim: 3 input_dim: 8 '
    ...                           'input_dim: 8 '
    ...                           'layers { name: "r" type: RELU bottom: "data" top: "r" }')
    >>> [(l.type, list(l.top)) for l in upgrade_net(net, "net.prototxt")]
    [('Input', ['data']), ('ReLU', ['r'])]
"""

from __future__ import annotations

from typing import Dict, List

from kerasq.converters.caffe.proto import caffe_pb2
from kerasq.errors import CaffeFormatError

V1_TYPE_NAMES: Dict[str, str] = {
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution",
    "DATA": "Data",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
    "CROP": "Crop",
}

V0_TYPE_NAMES: Dict[str, str] = {
    "accuracy": "Accuracy",
    "bnll": "BNLL",
    "concat": "Concat",
    "conv": "Convolution",
    "data": "Data",
    "dropout": "Dropout",
    "euclidean_loss": "EuclideanLoss",
    "flatten": "Flatten",
    "hdf5_data": "HDF5Data",
    "hdf5_output": "HDF5Output",
    "im2col": "Im2col",
    "images": "ImageData",
    "infogain_loss": "InfogainLoss",
    "innerproduct": "InnerProduct",
    "lrn": "LRN",
    "multinomial_logistic_loss": "MultinomialLogisticLoss",
    "pool": "Pooling",
    "relu": "ReLU",
    "sigmoid": "Sigmoid",
    "softmax": "Softmax",
    "softmax_loss": "SoftmaxWithLoss",
    "split": "Split",
    "tanh": "TanH",
    "window_data": "WindowData",
}


def _v1_to_v2(v1: caffe_pb2.V1LayerParameter, source: str) -> caffe_pb2.LayerParameter:
    layer = caffe_pb2.LayerParameter()
    layer.name = v1.name
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    layer.blobs.extend(v1.blobs)
    layer.loss_weight.extend(v1.loss_weight)
    for share_name in v1.param:
        layer.param.add().name = share_name
    enum_name = caffe_pb2.V1LayerParameter.LayerType.Name(v1.type)
    if enum_name not in V1_TYPE_NAMES:
        raise CaffeFormatError(
            f"V1 layer type {enum_name} has no V2 equivalent", file=source, layer=v1.name or None
        )
    layer.type = V1_TYPE_NAMES[enum_name]
    for field, value in v1.ListFields():
        if (
            field.name.endswith("_param")
            and field.name in caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
        ):
            getattr(layer, field.name).CopyFrom(value)
    return layer


def _v0_to_v2(
    v0: caffe_pb2.V0LayerParameter, v1: caffe_pb2.V1LayerParameter, source: str
) -> caffe_pb2.LayerParameter:
    layer = caffe_pb2.LayerParameter()
    layer.name = v0.name
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    if v0.type not in V0_TYPE_NAMES:
        raise CaffeFormatError(
            f"V0 layer type {v0.type!r} is not supported", file=source, layer=v0.name or None
        )
    layer.type = V0_TYPE_NAMES[v0.type]
    layer.blobs.extend(v0.blobs)
    kind = layer.type
    if kind == "Convolution":
        p = layer.convolution_param
        p.num_output = v0.num_output
        p.bias_term = v0.biasterm
        if v0.pad:
            p.pad.append(v0.pad)
        p.kernel_size.append(v0.kernelsize)
        p.group = v0.group
        if v0.stride != 1:
            p.stride.append(v0.stride)
    elif kind == "InnerProduct":
        layer.inner_product_param.num_output = v0.num_output
        layer.inner_product_param.bias_term = v0.biasterm
    elif kind == "Pooling":
        p = layer.pooling_param
        p.pool = int(v0.pool)
        p.kernel_size = v0.kernelsize
        p.stride = v0.stride
        p.pad = v0.pad
    elif kind == "Dropout":
        layer.dropout_param.dropout_ratio = v0.dropout_ratio
    elif kind == "LRN":
        p = layer.lrn_param
        p.local_size, p.alpha, p.beta, p.k = v0.local_size, v0.alpha, v0.beta, v0.k
    elif kind == "Concat":
        layer.concat_param.concat_dim = v0.concat_dim
    return layer


def _legacy_inputs(net: caffe_pb2.NetParameter, source: str) -> List[caffe_pb2.LayerParameter]:
    if not net.input:
        if net.input_dim or net.input_shape:
            raise CaffeFormatError("input_dim/input_shape given without input names", file=source)
        return []
    n = len(net.input)
    shapes: List[List[int]] = []
    if net.input_shape:
        if len(net.input_shape) != n:
            raise CaffeFormatError(
                f"{n} net inputs but {len(net.input_shape)} input_shape entries", file=source
            )
        shapes = [list(s.dim) for s in net.input_shape]
    elif net.input_dim:
        if len(net.input_dim) != 4 * n:
            raise CaffeFormatError(
                f"{n} net inputs need {4 * n} input_dim values, got {len(net.input_dim)}",
                file=source,
            )
        dims = list(net.input_dim)
        shapes = [dims[4 * i : 4 * i + 4] for i in range(n)]
    else:
        shapes = [[] for _ in net.input]  # shape must come from the user (input_shape)
    layers = []
    for name, shape in zip(net.input, shapes):
        layer = caffe_pb2.LayerParameter(name=name, type="Input")
        layer.top.append(name)
        if shape:
            layer.input_param.shape.add().dim.extend(int(d) for d in shape)
        layers.append(layer)
    return layers


def upgrade_net(net: caffe_pb2.NetParameter, source: str = "") -> List[caffe_pb2.LayerParameter]:
    """Return the net's layers in V2 form, legacy inputs first as ``Input`` layers."""
    if net.layer and net.layers:
        raise CaffeFormatError(
            "net mixes V2 'layer' and V1 'layers' entries (Caffe refuses this too)", file=source
        )
    layers = _legacy_inputs(net, source)
    if net.layer:
        for original in net.layer:
            copy = caffe_pb2.LayerParameter()
            copy.CopyFrom(original)
            layers.append(copy)
        return layers
    pad_of_top: Dict[str, tuple] = {}
    for v1 in net.layers:
        if v1.HasField("layer"):
            v0 = v1.layer
            if v0.type == "padding":  # V0: a separate padding layer feeding a conv
                if len(v1.bottom) != 1 or len(v1.top) != 1:
                    raise CaffeFormatError(
                        "V0 padding layer needs one bottom and one top",
                        file=source,
                        layer=v0.name or None,
                    )
                pad_of_top[v1.top[0]] = (v1.bottom[0], v0.pad)
                continue
            layer = _v0_to_v2(v0, v1, source)
            if layer.type == "Convolution" and layer.bottom and layer.bottom[0] in pad_of_top:
                bottom, pad = pad_of_top[layer.bottom[0]]
                layer.bottom[0] = bottom
                del layer.convolution_param.pad[:]
                layer.convolution_param.pad.append(pad)
            layers.append(layer)
        else:
            layers.append(_v1_to_v2(v1, source))
    return layers


__all__ = ["upgrade_net", "V1_TYPE_NAMES", "V0_TYPE_NAMES"]
