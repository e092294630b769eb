"""The quantization math of kerasq, in numpy and TensorFlow, bit-identical between the two.

Every function takes a numpy array (or list / scalar) or a ``tf.Tensor``: numpy in ->
numpy out (computed with numpy, TensorFlow not imported), tensor in -> tensor out
(computed with TF ops, usable inside ``tf.function``, with straight-through gradients).

* :func:`dfp_quantize`, :func:`dfp_range`, :func:`dfp_frac_bits`: dynamic fixed point
  (B-bit integers times 2^−fl, Ristretto / caffe-jacinto).
* :func:`minifloat_quantize`, :func:`minifloat_max`: Ristretto minifloat (E, M bits).
* :func:`pow2_quantize`: integer power-of-two weights.
* :func:`round_values`, :data:`ROUNDING_MODES`, :data:`DEFAULT_ROUNDING`: the rounding
  modes all of them share (default ties-to-even); :mod:`kerasq.numerics.rounding` holds the
  one numpy and one TF implementation every kerasq module rounds with (floats and integer
  right shifts).
* :class:`~kerasq.numerics.grid.GridSpec`: the typed grid description quantizers produce
  and export consumes; :data:`~kerasq.numerics.grid.EXPORT_TARGETS`.

Example:
    >>> from kerasq.numerics import dfp_quantize, dfp_frac_bits
    >>> fl = dfp_frac_bits(max_abs=3.2, bitwidth=8)   # il = 2 + sign bit -> fl = 5
    >>> dfp_quantize([3.2, -0.01, 5.0], bitwidth=8, frac_bits=fl)
    array([3.1875 , 0.     , 3.96875])

See docs/numerics.md for the formulas and the differences from Ristretto/caffe-jacinto.
"""

from kerasq.numerics.dfp import dfp_frac_bits, dfp_quantize, dfp_range
from kerasq.numerics.minifloat import minifloat_max, minifloat_quantize
from kerasq.numerics.pow2 import pow2_quantize
from kerasq.numerics.rounding import DEFAULT_ROUNDING, ROUNDING_MODES, round_values

__all__ = [
    "DEFAULT_ROUNDING",
    "ROUNDING_MODES",
    "dfp_frac_bits",
    "dfp_quantize",
    "dfp_range",
    "minifloat_max",
    "minifloat_quantize",
    "pow2_quantize",
    "round_values",
]
