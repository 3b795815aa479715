"""Turning convolutional activations ``(n, C, H, W)`` into the 2-D ``(datapoints, features)`` the measures take.

The reduction changes what is compared, so it is always an explicit choice:

* ``"flatten"``: ``(n, C*H*W)``: each image is a datapoint, every unit at every position a feature
  (features often outnumber datapoints: CCA-family measures then refuse; use debiased CKA).
* ``"positions"``: ``(n*H*W, C)``: every spatial position of every image is a datapoint, channels are
  features -- the SVCCA authors' choice for comparing a conv layer with itself (same H and W on both sides).
* ``"mean"``: ``(n, C)``: spatial mean (global average pooling) of each channel.

Any number of spatial dimensions works (``(n, C, L)`` sequences, ``(n, C, D, H, W)`` volumes); 2-D input is
returned unchanged whatever the mode.
"""

from __future__ import annotations

import numpy as np
import torch

from repana.errors import InputError

REDUCTIONS = ("flatten", "positions", "mean")


def reduce_conv(activations, mode: str):
    """Reduce ``(n, C, *spatial)`` activations to 2-D by ``mode`` (see module docs); numpy or torch in, same out."""
    if mode not in REDUCTIONS:
        raise InputError(f"unknown reduction {mode!r}; choose one of {REDUCTIONS}")
    is_numpy = not isinstance(activations, torch.Tensor)
    tensor = torch.from_numpy(np.asarray(activations)) if is_numpy else activations
    if tensor.ndim < 2:
        raise InputError(f"activations of shape {tuple(tensor.shape)}: need (n, features) or (n, C, *spatial)")
    if tensor.ndim == 2:
        result = tensor
    elif mode == "flatten":
        result = tensor.reshape(tensor.shape[0], -1)
    elif mode == "mean":
        result = tensor.mean(dim=tuple(range(2, tensor.ndim)))
    else:
        channels = tensor.shape[1]
        result = tensor.reshape(tensor.shape[0], channels, -1).transpose(1, 2).reshape(-1, channels)
    return result.numpy() if is_numpy else result
