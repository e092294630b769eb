"""``kerasq compare``: run a Caffe net through kerasq, compare every blob with reference .npy files.

Example::

    kerasq compare deploy.prototxt weights.caffemodel --input x.npy --reference dumps/

``dumps/<top>.npy`` holds Caffe's value of each top (NCHW). A blob matches when
``|ours - ref| <= atol * max(1, max|ref|) + rtol * |ref|`` everywhere. Exit status 0 if
all compared blobs match, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from kerasq.errors import KerasqError

EXIT_MISMATCH = 1


def add_parser(sub: "argparse._SubParsersAction") -> None:
    from kerasq.cli.convert import add_conversion_arguments

    p = sub.add_parser(
        "compare",
        help="Run a Caffe net through kerasq and compare every blob with reference .npy files.",
        description="Run a Caffe net through kerasq and compare every top blob with "
        "reference DIR/<top>.npy files (e.g. dumped from Caffe). Exit 1 on a mismatch.",
    )
    add_conversion_arguments(p)
    p.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="[NAME=]X.npy",
        help="NCHW input array (.npy); NAME= selects the input blob (repeatable)",
    )
    from kerasq.cli.quantize import add_layout_argument

    add_layout_argument(p)
    p.add_argument("--reference", required=True, metavar="DIR", help="folder of <top>.npy files")
    p.add_argument(
        "--atol",
        type=float,
        default=1e-5,
        help="absolute tolerance, scaled by max(1, max|ref|) (default 1e-5)",
    )
    p.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance (default 1e-4)")
    p.set_defaults(func=run)


def within_tolerance(
    ours: np.ndarray, ref: np.ndarray, atol: float, rtol: float
) -> Tuple[bool, float, float]:
    """(match, max abs error, max allowed-error ratio) for one blob.

    Example:
        >>> within_tolerance(np.array([1.0, 2.0]), np.array([1.0, 2.0001]), 1e-5, 1e-4)[0]
        True
    """
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    err = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    allowed = atol * scale + rtol * np.abs(ref.astype(np.float64))
    ratio = float(np.max(err / np.maximum(allowed, 1e-300))) if err.size else 0.0
    return bool(np.all(err <= allowed)), float(err.max()) if err.size else 0.0, ratio


def _parse_inputs(specs: Sequence[str], net_inputs: Sequence[str],
                  shapes: Optional[Dict[str, Sequence[int]]] = None,
                  layout: str = "auto") -> Dict[str, np.ndarray]:
    arrays: Dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = "", spec
        if not name:
            if len(net_inputs) != 1:
                raise KerasqError(
                    f"--input {spec!r}: the net has inputs {list(net_inputs)}; use NAME=X.npy"
                )
            name = net_inputs[0]
        if name not in net_inputs:
            raise KerasqError(f"--input {spec!r}: the net has no input {name!r} (inputs: "
                              f"{', '.join(net_inputs)})")
        from kerasq.data import load_model_inputs, match_layout

        array = load_model_inputs(path, what="input array")
        if isinstance(array, list):
            raise KerasqError("give one array per --input NAME=X.npy", file=path)
        shape = (shapes or {}).get(name)
        if shape:  # Caffe runs NCHW: NHWC data is transposed, ambiguous shapes refused
            array = match_layout(array, (None, *tuple(shape)[1:]), layout,
                                 expected_layout="nchw", name=name, file=path)
        arrays[name] = array
    return arrays


def run(args: argparse.Namespace) -> int:
    from kerasq.cli.convert import load_options
    from kerasq.converters import caffe
    from kerasq.converters.caffe.passes import build_graph

    if not os.path.isdir(args.reference):
        raise KerasqError("reference folder not found", file=args.reference)
    options = load_options(args)
    net = caffe.read_prototxt(args.prototxt)
    probe = build_graph(net, None, source=args.prototxt, input_shape=options["input_shape"])
    net_inputs = [probe.blob_names.get(i, i) for i in probe.inputs]
    final_names = set(probe.final_ids())
    shapes = {probe.blob_names.get(i, i): s for i, s in probe.inputs.items()}
    net_outputs = [probe.blob_names.get(i, i) for i in probe.output_ids()]
    inputs = _parse_inputs(args.input, net_inputs, shapes, args.layout)
    references: Dict[str, np.ndarray] = {}
    skipped: List[str] = []
    for entry in sorted(os.listdir(args.reference)):
        if not entry.endswith(".npy"):
            continue
        name = entry[:-4]
        if name in final_names:
            from kerasq.data import load_arrays

            loaded = load_arrays(os.path.join(args.reference, entry), "reference array")
            references[name] = loaded[""]
        else:
            skipped.append(name)
    if not references:
        raise KerasqError("no <top>.npy file there names a top of this net", file=args.reference)
    options.pop("input_shape", None)
    ours = caffe.forward(args.prototxt, args.caffemodel, inputs, blobs=list(references), **options)
    width = max(len(n) for n in references) + 2
    print(f"{'blob':<{width}}{'shape':<20}{'max|err|':>12}{'max|ref|':>12}{'err/tol':>10}  status")
    failures = 0
    for name, ref in references.items():
        got = ours[name]
        if got.shape != ref.shape:
            failures += 1
            print(
                f"{name:<{width}}{str(tuple(ref.shape)):<20}{'':>12}{'':>12}{'':>10}  "
                f"SHAPE {tuple(got.shape)}"
            )
            continue
        ok, err, ratio = within_tolerance(got, ref, args.atol, args.rtol)
        failures += not ok
        ref_max = float(np.max(np.abs(ref))) if ref.size else 0.0
        print(
            f"{name:<{width}}{str(tuple(ref.shape)):<20}{err:>12.3g}{ref_max:>12.3g}"
            f"{ratio:>10.3g}  {'ok' if ok else 'MISMATCH'}"
        )
    if skipped:
        print(f"skipped (not a top of this net): {', '.join(skipped)}")
    unchecked = [name for name in net_outputs if name not in references]
    if unchecked:  # a net output without its reference is reported, never passed silently
        print(f"net outputs not compared (no {args.reference}/<top>.npy): {', '.join(unchecked)}")
    outputs_checked = [name for name in net_outputs if name in references]
    if outputs_checked:
        print(f"net outputs compared: {', '.join(outputs_checked)}")
    print(
        f"{len(references) - failures}/{len(references)} blobs match "
        f"(atol {args.atol:g}*max(1,|ref|) + rtol {args.rtol:g}*|ref|)"
    )
    return EXIT_MISMATCH if failures else 0
