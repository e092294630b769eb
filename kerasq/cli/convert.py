"""``kerasq convert``: convert a Caffe net (deploy.prototxt + .caffemodel) to a Keras model."""

from __future__ import annotations

import argparse

from kerasq.errors import KerasqError


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("convert", help="Convert a Caffe net (deploy.prototxt + .caffemodel) to a Keras model.", description="Convert a Caffe net (deploy.prototxt + .caffemodel) to a Keras model.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise KerasqError("`kerasq convert` is not available in this version yet (kerasq.converters.caffe)")
