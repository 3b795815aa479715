"""Validation and conversion of activation arrays: numpy or torch in, float64 torch on the input's device out.

Every measure goes through :func:`as_float64_matrix` before any arithmetic, so float32 activations with a
large mean offset are cast to float64 *before* they are centred (centring in float32 loses the digits that
carry the signal; five popular CKA implementations fail that way).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import torch

from repana.errors import InputError

class RepanaWarning(UserWarning):
    """A result that is computed but easy to misread (e.g. plain CKA with few datapoints)."""


def warn(message: str) -> None:
    """Emit a :class:`RepanaWarning` attributed to the first caller outside the repana package."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_globals.get("__name__", "").startswith("repana."):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, RepanaWarning, stacklevel=level)


def original_eps(array) -> float:
    """Machine epsilon of ``array``'s own float dtype (float32: 1.19e-7); integers count as float64."""
    dtype = array.dtype
    if isinstance(array, torch.Tensor):
        return torch.finfo(dtype).eps if dtype.is_floating_point else float(np.finfo(np.float64).eps)
    return float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else float(np.finfo(np.float64).eps)


def as_float64_tensor(array, name: str = "X") -> torch.Tensor:
    """Any numpy array / torch tensor / nested list -> float64 torch tensor on the input's device (CPU for numpy)."""
    if isinstance(array, torch.Tensor):
        tensor = array.detach()
    else:
        try:
            tensor = torch.from_numpy(np.asarray(array))
        except (TypeError, ValueError) as error:
            raise InputError(f"{name}: expected a numpy array or torch tensor of numbers, "
                             f"got {type(array).__name__} ({error})") from None
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise InputError(f"{name}: expected real numbers, got dtype {tensor.dtype}")
    return tensor.to(torch.float64)


def as_float64_matrix(array, name: str = "X", min_datapoints: int = 2) -> torch.Tensor:
    """Validate ``array`` as ``(n_datapoints, n_features)`` activations and return it as float64.

    Raises :class:`InputError` for: not 2-D (1-D input gets the reshape that fixes it, 4-D the pointer to
    :func:`repana.similarity.reduce_conv`), fewer than ``min_datapoints`` rows (the message says how
    many were given and needed), no features, NaN or Inf.
    """
    tensor = as_float64_tensor(array, name)
    if tensor.ndim == 1:
        raise InputError(f"{name} is 1-D with shape {tuple(tensor.shape)}; similarity measures take "
                         f"(n_datapoints, n_features): use X.reshape(-1, 1) for one feature")
    if tensor.ndim != 2:
        raise InputError(f"{name} has shape {tuple(tensor.shape)}; similarity measures take 2-D "
                         f"(n_datapoints, n_features). Reduce convolutional maps (n, C, H, W) first with "
                         f"repana.similarity.reduce_conv(acts, 'flatten' | 'positions' | 'mean')")
    n_datapoints, n_features = tensor.shape
    if n_features == 0:
        raise InputError(f"{name} has 0 features (shape {tuple(tensor.shape)})")
    if n_datapoints < min_datapoints:
        raise InputError(f"{name} has {n_datapoints} datapoints; at least {min_datapoints} are needed")
    # A sum is finite only if every term is (no temporary mask unless something is wrong).
    if not bool(torch.isfinite(tensor.sum())):
        n_bad = int((~torch.isfinite(tensor)).sum())
        if n_bad == 0:
            raise InputError(f"{name} has values so large that their sum overflows float64; rescale it")
        raise InputError(f"{name} contains {n_bad} NaN or Inf value(s) out of {tensor.numel()}; "
                         f"similarity is undefined there (check the model's activations / inputs)")
    return tensor


def check_same_datapoints(x_rows: int, y_rows: int, x_name: str = "X", y_name: str = "Y") -> None:
    """Both representations must describe the same datapoints, row for row."""
    if x_rows != y_rows:
        raise InputError(f"{x_name} has {x_rows} datapoints but {y_name} has {y_rows}; rows must be the same "
                         f"datapoints in the same order (with reduce_conv 'positions', both layers need the "
                         f"same spatial size)")


def to_python_float(value) -> float:
    """A 0-d tensor / numpy scalar -> Python float."""
    return float(value.item() if hasattr(value, "item") else value)
