"""Has any of a list of variables changed since a snapshot? One op per check.

:class:`VariableSnapshot` saves the variables' dtypes, shapes and bytes;
:meth:`VariableSnapshot.unchanged` tells whether every variable still holds exactly
those. With the C++ library the snapshot is a TF resource holding the copy and
references to the variables, and a check is one eager op with one input: it reads the
variables in place under their locks and compares the buffers (a ``tf.function`` taking
the variables as inputs pays per variable on every call, ~1 µs each). The fallback is one
compiled TF function that reads, bitcasts and compares them (the same answer). Bytes, not
values: ``-0.0`` differs from ``0.0`` and a NaN equals the same NaN.

Example:
    >>> from kerasq._compat import tf
    >>> v = tf.Variable([1.0, 2.0])
    >>> snapshot = VariableSnapshot([v])
    >>> snapshot.unchanged()
    True
    >>> _ = v.assign([1.0, 3.0]); snapshot.unchanged()
    False
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kerasq.ops._loader import library


def variable_bytes(variables: Sequence[Any]) -> np.ndarray:
    """The variables' current values as one uint8 vector (each one's bytes, in order)."""
    parts = [np.ascontiguousarray(np.asarray(v.numpy())).view(np.uint8).reshape(-1)
             for v in variables]
    return np.concatenate(parts) if parts else np.zeros([0], np.uint8)


def _bytes_equal(variables: Sequence[Any], saved: Any) -> Any:
    """The fallback check in TF ops: a scalar bool tensor."""
    from kerasq._compat import tf

    parts = []
    for v in variables:
        value = tf.convert_to_tensor(v)
        if value.dtype == tf.bool:
            value = tf.cast(value, tf.uint8)
        if value.dtype != tf.uint8:
            value = tf.bitcast(value, tf.uint8)  # [..., itemsize] bytes (same shape for 1)
        parts.append(tf.reshape(value, [-1]))
    current = tf.concat(parts, 0) if parts else tf.zeros([0], tf.uint8)
    if current.shape[0] != saved.shape[0]:
        return tf.constant(False)
    return tf.reduce_all(tf.equal(current, saved))


class VariableSnapshot:
    """The dtypes, shapes and bytes of ``variables`` now; :meth:`unchanged` compares.

    Example:
        >>> snapshot = VariableSnapshot(model.variables)  # doctest: +SKIP
        >>> snapshot.unchanged()  # False once any weight was assigned a new value  # doctest: +SKIP
    """

    def __init__(self, variables: Sequence[Any]):  # eager (reads the values now)
        from kerasq._compat import tf

        variables = list(variables)
        self._lib = library()
        if self._lib is not None:
            self._handle = self._lib.kerasq_variable_snapshot([v.handle for v in variables])
            return
        layout = [(v.dtype, tuple(v.shape)) for v in variables]
        saved = tf.constant(variable_bytes(variables))
        self._compiled = tf.function(lambda: _bytes_equal(variables, saved),
                                     autograph=False).get_concrete_function()
        self._layout, self._variables = layout, variables

    def unchanged(self) -> bool:
        """True while every variable holds the dtype, shape and bytes it had."""
        if self._lib is not None:
            return bool(self._lib.kerasq_snapshot_unchanged(self._handle))
        if [(v.dtype, tuple(v.shape)) for v in self._variables] != self._layout:
            return False
        return bool(self._compiled())


__all__ = ["VariableSnapshot", "variable_bytes"]
