"""Caffe layer handlers. Importing this package registers every handler (explicit list)."""

from kerasq.converters.caffe.layers import _registry  # noqa: F401
from kerasq.converters.caffe.layers import basic  # noqa: F401
from kerasq.converters.caffe.layers import batch_norm  # noqa: F401
from kerasq.converters.caffe.layers import convolution  # noqa: F401
from kerasq.converters.caffe.layers import eltwise  # noqa: F401
from kerasq.converters.caffe.layers import inner_product  # noqa: F401
from kerasq.converters.caffe.layers import pooling  # noqa: F401
from kerasq.converters.caffe.layers import structure  # noqa: F401
from kerasq.converters.caffe.layers import activations  # noqa: F401
from kerasq.converters.caffe.layers import misc  # noqa: F401
from kerasq.converters.caffe.layers import normalization  # noqa: F401
from kerasq.converters.caffe.layers import resize  # noqa: F401
from kerasq.converters.caffe.layers import shape_ops  # noqa: F401
from kerasq.converters.caffe.layers import detection  # noqa: F401
