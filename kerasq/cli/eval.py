"""``kerasq eval``: accuracy / agreement of a Keras or TFLite model on arrays.

Example::

    kerasq eval model.tflite --data val.npz                   # x and y in one .npz
    kerasq eval model.tflite --data x.npy --labels y.npy
    kerasq eval model.tflite --data x.npy --reference q.h5    # agreement with q.h5
    kerasq eval q.h5 --data val.npz --reference model.h5 --json scores.json

Every output is scored under its name (see :mod:`kerasq.evaluate`). In an ``.npz``, labels
are ``y`` (one output) or ``y_<output name>`` / ``y0``, ``y1``... (several outputs).
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List, Optional, Tuple

from kerasq.errors import KerasqError


def add_parser(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser(
        "eval",
        help="Accuracy / agreement of a .h5 or .tflite model on arrays.",
        description="Score every output of a Keras model (.h5, .keras, SavedModel) or a "
                    "TFLite file: top-1 accuracy (classifier outputs) or mean absolute error "
                    "against labels, and agreement with a reference model.",
    )
    p.add_argument("model", help="model.tflite, model.h5, model.keras or a SavedModel directory")
    p.add_argument("--data", required=True, metavar="NPZ",
                   help=".npz with x (or x0, x1... for several inputs) and labels y "
                        "(or y_<output> / y0, y1...), or an .npy of inputs")
    p.add_argument("--labels", metavar="NPY", help="labels as an .npy (one output)")
    p.add_argument("--reference", metavar="MODEL",
                   help="also compare every output with this model (.h5 or .tflite)")
    p.add_argument("--kind", action="append", default=[], metavar="OUTPUT=KIND",
                   help="score OUTPUT as 'classifier' or 'regression' (default: from the "
                        "labels, or classifier for a softmax output); repeatable")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    p.set_defaults(func=run)


def read_data(path: str, labels_path: Optional[str]) -> Tuple[Any, Any]:
    """(x, labels) from the files, checked by :mod:`kerasq.data`; labels None, an array or
    ``{name or index: array}``."""
    from kerasq.data import load_arrays, load_inputs_and_labels

    x, y = load_inputs_and_labels(path, need_labels=False)
    if y is None and path.lower().endswith(".npz"):
        arrays = load_arrays(path)
        named = {k[2:]: v for k, v in arrays.items() if k.startswith("y_")}
        ordered = [arrays[f"y{i}"] for i in range(len(arrays)) if f"y{i}" in arrays]
        y = named or (ordered if ordered else None)
    if labels_path:
        if y is not None:
            raise KerasqError("labels given twice: in --data and in --labels", file=labels_path)
        arrays = load_arrays(labels_path, "labels")
        if list(arrays) != [""]:
            raise KerasqError("labels must be an .npy array", file=labels_path)
        y = arrays[""]
    return x, y


def _kinds(items: List[str]) -> Dict[str, str]:
    kinds = {}
    for item in items:
        name, sep, kind = item.partition("=")
        if not sep or not name:
            raise KerasqError(f"--kind {item!r}: expected OUTPUT=classifier|regression",
                              layer="--kind")
        kinds[name] = kind
    return kinds


def run(args: argparse.Namespace) -> int:
    from kerasq.evaluate import evaluate

    x, y = read_data(args.data, args.labels)
    if y is None and not args.reference:
        raise KerasqError("no labels (y in the .npz, or --labels) and no --reference: "
                          "nothing to score", file=args.data)
    result = evaluate(args.model, x, y, reference=args.reference, kinds=_kinds(args.kind),
                      batch_size=args.batch_size)
    print(f"model {args.model}" + (f", reference {args.reference}" if args.reference else ""))
    print(result.table())
    if args.json:
        from kerasq._io import write_bytes_atomic

        write_bytes_atomic(args.json, (json.dumps(result.to_dict(), indent=2) + "\n").encode())
    return 0
