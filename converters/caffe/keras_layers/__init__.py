"""The converter's custom Keras layers, for Caffe semantics no stock Keras layer expresses.

Grouped by concept: :mod:`.elementwise` (neuron functions), :mod:`.affine` (scales, sums,
offsets, Embed, input preprocessing), :mod:`.normalization`, :mod:`.rearrange` (layers that
only move values), :mod:`.reduction` (reductions, top-k with Caffe's tie order) and
:mod:`.resize`, :mod:`.detection` (SSD PriorBox and DetectionOutput). Every layer

* subclasses ``_base.Configured`` (the constructor arguments named in ``_fields`` are its
  ``get_config``), keeps constants as non-trainable weights (no ``Lambda``) and is
  registered under the ``kerasq`` package, saved as ``kerasq>ClassName`` (the names and
  config keys are kept, so files written by earlier kerasq versions load);
* uses only TensorFlow ops with TFLite builtins;
* declares how ``kerasq.schemes`` quantizes it, as the class attribute ``quantization_role``:
  ``"output"`` (a new real-valued result: quantized like an activation), ``"passthrough"``
  (a subset or rearrangement of its input values, already on the grid) or ``"float"``
  (integer indices or exact 0/1 flags, kept in float).

Axis arguments are Keras axes (the lowering maps Caffe axes first). Load converted models
with ``custom_objects=kerasq.converters.caffe.custom_objects()``.

Example:
    >>> from kerasq._compat import keras
    >>> y = EdgePadding2D(((1, 1), (0, 2)))(keras.Input((4, 4, 3)))
    >>> tuple(y.shape), EdgePadding2D.quantization_role
    ((None, 6, 6, 3), 'passthrough')
"""

from __future__ import annotations

from typing import List

from kerasq.converters.caffe.keras_layers._base import ROLES
from kerasq.converters.caffe.keras_layers.affine import (
    BroadcastAddCaffe,
    BroadcastAffine,
    CaffeEmbed,
    CaffePreprocess,
    ConstantBias,
    ConstantMultiply,
    WeightedSum,
)
from kerasq.converters.caffe.keras_layers.detection import CaffeDetectionOutput, CaffePriorBox
from kerasq.converters.caffe.keras_layers.elementwise import (
    BNLL,
    AbsVal,
    ClipRange,
    ExpAffine,
    LogAffine,
    PowerAffine,
    SwishBeta,
    ThresholdStep,
)
from kerasq.converters.caffe.keras_layers.normalization import (
    BatchStatNormalize,
    L2Normalize,
    LRNAcrossChannels,
    LRNWithinChannel,
    MeanVarianceNorm,
)
from kerasq.converters.caffe.keras_layers.rearrange import (
    AxisSlice,
    AxisTile,
    BatchReshape,
    ChannelShuffle,
    EdgePadding2D,
    FullTranspose,
)
from kerasq.converters.caffe.keras_layers.reduction import (
    ArgMaxFlat,
    AxisReduce,
    TopKAxis,
    caffe_top_k,
)
from kerasq.converters.caffe.keras_layers.resize import (
    InterpBilinear,
    NearestResize,
    interp_output_size,
)

ALL_LAYERS: List[type] = [
    AbsVal, BNLL, PowerAffine, ExpAffine, LogAffine, ThresholdStep, ClipRange, SwishBeta,
    ConstantMultiply, WeightedSum, BroadcastAffine, ConstantBias, BroadcastAddCaffe,
    CaffePreprocess, CaffeEmbed,
    BatchStatNormalize, LRNAcrossChannels, LRNWithinChannel, MeanVarianceNorm, L2Normalize,
    EdgePadding2D, BatchReshape, AxisSlice, AxisTile, FullTranspose, ChannelShuffle,
    AxisReduce, TopKAxis, ArgMaxFlat,
    InterpBilinear, NearestResize,
    CaffePriorBox, CaffeDetectionOutput,
]

__all__ = [cls.__name__ for cls in ALL_LAYERS] + [
    "ALL_LAYERS", "ROLES", "caffe_top_k", "interp_output_size",
]
