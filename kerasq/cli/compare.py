"""``kerasq compare``: run a Caffe net through kerasq and compare every blob with reference .npy files."""

from __future__ import annotations

import argparse

from kerasq.errors import KerasqError


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("compare", help="Run a Caffe net through kerasq and compare every blob with reference .npy files.", description="Run a Caffe net through kerasq and compare every blob with reference .npy files.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise KerasqError("`kerasq compare` is not available in this version yet (kerasq.converters.caffe)")
