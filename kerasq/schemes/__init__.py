"""kerasq quantization schemes: DFP, minifloat and power-of-two weights on tfmot.

Post-training quantization is two calls, quantization-aware training one more::

    import kerasq
    qmodel = kerasq.quantize_model(model, kerasq.QuantizationConfig(bitwidth_weights=8))
    kerasq.calibrate(qmodel, calibration_images)       # PTQ: ranges and fractional lengths
    qmodel.compile(...); qmodel.fit(...)                # optional QAT from calibrated ranges
    qmodel.save("q.h5"); kerasq.load_model("q.h5")

Submodules are imported on first use, so ``import kerasq.schemes.config`` does not load
TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

from kerasq.schemes.config import QuantizationConfig

_LAZY_ATTRS = {
    "int8_deployable": "kerasq.schemes.deployable",
    "quantize_model": "kerasq.schemes.api",
    "calibrate": "kerasq.schemes.calibration",
    "load_model": "kerasq.serialization",
    "custom_objects": "kerasq.serialization",
    "quantize_scope": "kerasq.serialization",
    "KerasqQuantizeScheme": "kerasq.schemes.scheme",
    "KerasqQuantizeRegistry": "kerasq.schemes.registry",
    "refresh_weight_state": "kerasq.schemes.slots",
    "iter_slots": "kerasq.schemes.slots",
    "DFPActivationQuantizer": "kerasq.schemes.quantizers",
    "DFPWeightQuantizer": "kerasq.schemes.quantizers",
    "BiasQuantizer": "kerasq.schemes.quantizers",
    "MinifloatQuantizer": "kerasq.schemes.quantizers",
    "Pow2WeightQuantizer": "kerasq.schemes.quantizers",
    "AccumulatorBiasQuantizer": "kerasq.schemes.quantizers",
    "align_for_int8": "kerasq.schemes.shared_grids",
    "unify_shared_grids": "kerasq.schemes.shared_grids",
    "link_accumulator_biases": "kerasq.schemes.shared_grids",
    "SharedGridCallback": "kerasq.schemes.shared_grids",
    "search_bitwidths": "kerasq.schemes.search",
    "report": "kerasq.schemes.report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRS:
        module = importlib.import_module(_LAZY_ATTRS[name])
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kerasq.schemes' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY_ATTRS))


__all__ = ["QuantizationConfig", *_LAZY_ATTRS]  # noqa: PLE0604 (keys are str)
