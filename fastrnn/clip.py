"""Gradient clipping for a layer or a dict of gradient arrays, in place."""

import numpy as np

from ._kernels.clipping import clip_by_norm, clip_by_value, global_norm
from ._validate import non_negative_float


def _gradient_buffers(grads):
    """The arrays to clip: a layer's or model's one flat buffer, or each array of a
    mapping."""
    flat = getattr(grads, "flat_grads", None)
    if flat is not None:
        return [flat]
    if not hasattr(grads, "values"):
        raise TypeError("grads must be a layer/model or a mapping of names to arrays, "
                        f"got {type(grads).__name__}")
    buffers = []
    for name, array in grads.items():
        if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
            raise TypeError(f"grads[{name!r}] must be a float numpy array, "
                            f"got {type(array).__name__}")
        if not array.flags.writeable:
            raise ValueError(f"grads[{name!r}] is read-only; clipping works in place")
        if array.dtype not in (np.float32, np.float64):
            raise TypeError(f"grads[{name!r}] must be float32 or float64, got {array.dtype}")
        buffers.append(array.reshape(-1) if array.flags.c_contiguous else array)
    return buffers


def clip_grad_norm(grads, max_norm):
    """Scale all gradients so their global L2 norm is at most `max_norm`.

    Same rule as torch.nn.utils.clip_grad_norm_ (coefficient max_norm / (norm + 1e-6)
    applied when below 1); returns the total norm before clipping.
    """
    max_norm = non_negative_float(max_norm, "max_norm", allow_none=False)
    buffers = _gradient_buffers(grads)
    if len(buffers) == 1 and buffers[0].ndim == 1:
        return float(clip_by_norm(buffers[0], max_norm))
    norm = float(np.sqrt(sum(global_norm(np.ascontiguousarray(b).reshape(-1)) ** 2
                             for b in buffers)))
    coefficient = max_norm / (norm + 1e-6)
    if coefficient < 1.0:
        for buffer in buffers:
            buffer *= coefficient
    return norm


def clip_grad_value(grads, clip_value):
    """Clip every gradient element to [-clip_value, clip_value], in place."""
    clip_value = non_negative_float(clip_value, "clip_value", allow_none=False)
    for buffer in _gradient_buffers(grads):
        if buffer.ndim == 1 and buffer.flags.c_contiguous:
            clip_by_value(buffer, clip_value)
        else:
            np.clip(buffer, -clip_value, clip_value, out=buffer)
    return None
