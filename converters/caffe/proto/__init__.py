"""kerasq's Caffe schema (``caffe.proto``) and its generated module ``caffe_pb2``.

``caffe.proto`` keeps BVLC's field numbers; regenerate ``caffe_pb2.py`` with::

    python -m grpc_tools.protoc -I converters --python_out=converters \\
        converters/caffe/proto/caffe.proto
"""

from kerasq.converters.caffe.proto import caffe_pb2

__all__ = ["caffe_pb2"]
