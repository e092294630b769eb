"""Reading Caffe's repeated/legacy spatial parameters (kernel, stride, pad, dilation)."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple


def spatial_pair(
    repeated: Sequence[int],
    h: Optional[int],
    w: Optional[int],
    default: Optional[int],
    what: str,
) -> Tuple[int, int]:
    """Caffe's rule: ``*_h``/``*_w`` win; one repeated value = both dims, two = (h, w).

    Example:
        >>> spatial_pair([3], None, None, 1, "kernel"), spatial_pair([4, 5], None, None, 1, "k")
        ((3, 3), (4, 5))
    """
    if h is not None or w is not None:
        if repeated:
            raise ValueError(f"{what} given both as {what}_h/{what}_w and as a list")
        if h is None or w is None:
            raise ValueError(f"{what}_h and {what}_w must be given together")
        return int(h), int(w)
    values = list(repeated)
    if not values:
        if default is None:
            raise ValueError(f"{what} size is required")
        return int(default), int(default)
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise ValueError(f"{what} has {len(values)} values; only 2-D spatial layers are supported")


def field(msg, name: str) -> Optional[int]:
    """``msg.name`` if explicitly set, else None."""
    return getattr(msg, name) if msg.HasField(name) else None
