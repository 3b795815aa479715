"""Validation and conversion of activation arrays: numpy, torch (any float dtype or integers), nested lists or
pandas DataFrames in, float64 torch on the input's device out; anything else an ``InputError`` naming the type.

Every measure goes through :func:`as_float64_matrix` before any arithmetic, so float32 activations with a
large mean offset are cast to float64 *before* they are centred (centring in float32 loses the digits that
carry the signal; five popular CKA implementations fail that way).
"""

from __future__ import annotations

import math
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


_TORCH_INTEGERS = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}

def input_eps(dtype) -> float:
    """Machine epsilon of the dtype the activations came in (torch or numpy dtype): float16 9.8e-4, bfloat16
    7.8e-3, float32 1.19e-7, float64 2.2e-16; integers are exact and count as float64. See
    :meth:`repana.similarity.Representation.rank_rtol` for the rank tolerance built from it."""
    if isinstance(dtype, np.dtype):
        dtype = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
    if isinstance(dtype, torch.dtype):
        return float(torch.finfo(dtype if dtype.is_floating_point else torch.float64).eps)
    raise TypeError(f"expected a torch or numpy dtype, got {dtype!r}")


def as_real_tensor(array, name: str = "X") -> torch.Tensor:
    """``array`` as a torch tensor of real numbers in its own dtype (no float64 cast yet; numpy data not copied).

    Accepts torch tensors (any float or integer dtype, any device), numpy arrays, nested lists / tuples of
    numbers and pandas DataFrames (anything ``numpy.asarray`` turns into a float or integer array). Raises
    :class:`InputError` naming the type for anything else: strings, object arrays (e.g. a DataFrame with a
    text column), complex or boolean values, ragged nested lists.
    """
    if isinstance(array, torch.Tensor):
        tensor = array.detach()
        if not (tensor.dtype.is_floating_point or tensor.dtype in _TORCH_INTEGERS):
            raise InputError(f"{name}: expected real numbers, got a torch tensor of dtype {tensor.dtype}; "
                             f"convert it with .float()")
        return tensor
    kind = type(array).__name__
    try:
        values = np.asarray(array)
    except (TypeError, ValueError) as error:  # ragged nested lists, unconvertible objects
        raise InputError(f"{name}: expected a rectangular array of numbers (n_datapoints, n_features), got "
                         f"{kind} that numpy cannot turn into one ({str(error).splitlines()[0]})") from None
    if values.dtype.kind not in "fiu":
        what = {"c": "complex numbers", "b": "booleans", "O": "Python objects (mixed or text values)",
                "U": "strings", "S": "bytes"}.get(values.dtype.kind, f"values of dtype {values.dtype}")
        raise InputError(f"{name}: expected real numbers (float or integer), got {kind} of {what} "
                         f"(dtype {values.dtype}); convert the activations to a float array")
    if values.dtype.kind == "f" and values.dtype.itemsize > 8:  # long double: numpy only
        values = values.astype(np.float64)
    if any(stride < 0 for stride in values.strides):  # a reversed view (x[::-1]): torch has no negative strides
        values = values.copy()
    if not values.flags.writeable:  # e.g. a DataFrame's block under copy-on-write: never written to here
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(values)
    return torch.from_numpy(values)


def as_float64_tensor(array, name: str = "X") -> torch.Tensor:
    """Any accepted array-like (see :func:`as_real_tensor`) -> float64 torch tensor on its device (CPU for numpy)."""
    return as_real_tensor(array, name).to(torch.float64)


def as_float64_matrix(array, name: str = "X", min_datapoints: int = 2) -> torch.Tensor:
    """:func:`as_float64_matrix_and_max_abs` without the largest magnitude."""
    return as_float64_matrix_and_max_abs(array, name, min_datapoints)[0]


def as_float64_matrix_and_max_abs(array, name: str = "X", min_datapoints: int = 2) -> tuple[torch.Tensor, float]:
    """Validate ``array`` as ``(n_datapoints, n_features)`` activations and return it as float64.

    ``array``: anything :func:`as_real_tensor` accepts (numpy, torch of any float dtype, lists, DataFrames).
    The float64 cast happens first; every check below is made on the float64 values.

    Returns the float64 tensor and its largest absolute value.

    Raises :class:`InputError` for: not 2-D (1-D input gets the reshape that fixes it, 4-D the pointer to
    :func:`repana.similarity.reduce_conv`), fewer than ``min_datapoints`` rows (the message says how
    many were given and needed), no features, NaN or Inf.
    """
    tensor = as_float64_shaped_matrix(array, name, min_datapoints)
    return tensor, finite_max_abs(tensor, name)


def as_float64_shaped_matrix(array, name: str = "X", min_datapoints: int = 2) -> torch.Tensor:
    """The shape checks of :func:`as_float64_matrix_and_max_abs` (same errors) on the float64 cast, values not
    yet checked: the caller must check them (:func:`finite_max_abs`, or a pass over the data that NaN and Inf
    provably reach) before any use."""
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
    return tensor


def finite_max_abs(tensor: torch.Tensor, name: str = "X") -> float:
    """Largest absolute value of ``tensor``; :class:`InputError` counting the NaN / Inf values if there are any."""
    # The extremes are finite only if every value is (one cheap pass, no temporary mask unless something is wrong).
    low, high = (float(value) for value in torch.aminmax(tensor))
    if not (math.isfinite(low) and math.isfinite(high)):
        n_bad = int((~torch.isfinite(tensor)).sum())
        raise InputError(f"{name} contains {n_bad} NaN or Inf value(s) out of {tensor.numel()}; "
                         f"similarity is undefined there (check the model's activations / inputs)")
    return max(-low, high)


def max_abs(tensor: torch.Tensor) -> float:
    """Largest absolute value of a finite tensor (``aminmax``: one pass, no temporary)."""
    low, high = torch.aminmax(tensor)
    return max(-float(low), float(high))


def check_same_datapoints(x_rows: int, y_rows: int, x_name: str = "X", y_name: str = "Y") -> None:
    """Both representations must describe the same datapoints, row for row."""
    if x_rows != y_rows:
        raise InputError(f"{x_name} has {x_rows} datapoints but {y_name} has {y_rows}; rows must be the same "
                         f"datapoints in the same order (with reduce_conv 'positions', both layers need the "
                         f"same spatial size)")
