"""Caffe -> Keras converter (``kerasq.converters.caffe``).

Exact by construction: Caffe's padding, pooling (ceil + clip rule, AVE divisor),
BatchNorm scale factor, flatten order and axis parameters are reproduced, with
per-tensor layout tracking so the Keras model stays NHWC.

Example:
    >>> from kerasq.converters import caffe
    >>> model = caffe.load("deploy.prototxt", "weights.caffemodel")   # doctest: +SKIP
    >>> tops = caffe.forward("deploy.prototxt", "weights.caffemodel",
    ...                      {"data": x_nchw})                          # doctest: +SKIP
"""

from kerasq.converters.caffe.api import custom_objects, forward, load
from kerasq.converters.caffe.reader import read_binaryproto, read_caffemodel, read_prototxt

__all__ = [
    "load",
    "forward",
    "custom_objects",
    "read_prototxt",
    "read_caffemodel",
    "read_binaryproto",
]
