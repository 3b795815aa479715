"""Turning layer activations into the 2-D ``(datapoints, features)`` the measures take, by their *layout*.

The reduction changes what is compared, so it is always an explicit choice, and it depends on what the
dimensions mean. A 3-D activation can be a 1-D conv map ``(n, C, L)`` (channels first) or a token sequence
``(n, T, D)`` (features last): the shape alone cannot tell, so the layout is named, never guessed.

Layouts and their reductions (:data:`LAYOUT_REDUCTIONS`):

* ``"conv"``, ``(n, C, *spatial)`` (``(n, C, H, W)`` images, ``(n, C, L)``, ``(n, C, D, H, W)``):

  * ``"flatten"``: ``(n, C*H*W)``: each image is a datapoint, every unit at every position a feature
    (features often outnumber datapoints: CCA-family measures then refuse; use debiased CKA).
  * ``"positions"``: ``(n*H*W, C)``: every spatial position of every image is a datapoint, channels are
    features -- the SVCCA authors' choice for comparing a conv layer with itself (same H and W on both sides).
  * ``"mean"``: ``(n, C)``: spatial mean (global average pooling) of each channel.

* ``"sequence"``, ``(n, T, D)`` batch-first token sequences (transformers):

  * ``"tokens"``: ``(n*T, D)``: every token of every sequence is a datapoint (both sides need the same T).
  * ``"mean"``: ``(n, D)``: mean over the tokens.
  * ``"first"``: ``(n, D)``: the first token (BERT's ``[CLS]``).
  * ``"flatten"``: ``(n, T*D)``.

* ``"flat"``: ``(n, features)``, used as is (reduction ``"none"``).

2-D activations are ``"flat"`` whatever layout is named.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from repana.errors import InputError

#: Reductions of conv maps ``(n, C, *spatial)`` (the historical name of this tuple).
REDUCTIONS = ("flatten", "positions", "mean")
SEQUENCE_REDUCTIONS = ("tokens", "mean", "first", "flatten")
LAYOUT_REDUCTIONS = {"conv": REDUCTIONS, "sequence": SEQUENCE_REDUCTIONS, "flat": ("none",)}
LAYOUTS = tuple(LAYOUT_REDUCTIONS)

_DESCRIBE = {
    ("conv", "flatten"): "(n, C*H*W)", ("conv", "positions"): "(n*H*W, C)", ("conv", "mean"): "(n, C)",
    ("sequence", "tokens"): "(n*T, D)", ("sequence", "mean"): "(n, D)", ("sequence", "first"): "(n, D)",
    ("sequence", "flatten"): "(n, T*D)",
}


def reduction_options(layout: str) -> str:
    """``"'flatten' (n, C*H*W), 'positions' (n*H*W, C) or 'mean' (n, C)"`` for ``layout``, for messages."""
    names = [f"{name!r} {_DESCRIBE.get((layout, name), '')}".rstrip() for name in LAYOUT_REDUCTIONS[layout]]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def check_layout(layout: str) -> str:
    if layout not in LAYOUT_REDUCTIONS:
        raise InputError(f"unknown layout {layout!r}; choose 'conv' (n, C, *spatial), 'sequence' (n, T, D) "
                         f"or 'flat' (n, features)")
    return layout


def check_layout_option(layout):
    """A ``layout=`` setting, checked: None, one layout for every layer, or ``{layer or glob: layout}``
    (copied into a new dict; a None value leaves that layer's layout to be inferred)."""
    if layout is None:
        return None
    if isinstance(layout, str):
        return check_layout(layout)
    if not isinstance(layout, Mapping):
        raise InputError(f"layout={layout!r}: give 'conv', 'sequence', 'flat' or {{layer or glob: layout}}")
    for value in layout.values():
        if value is not None:
            check_layout(value)
    return dict(layout)


def reduce_activations(activations, layout: str, reduction: str | None):
    """Reduce ``activations`` of the named ``layout`` to 2-D by ``reduction``; numpy or torch in, same out.

    Raises:
        InputError: an unknown layout or reduction, a reduction that does not belong to the layout, a shape
            that does not fit the layout (``"sequence"`` needs 3-D, ``"conv"`` at least 3-D), or
            ``reduction=None`` for an activation with more than 2 dimensions. Messages name the shape and
            the options.
    """
    check_layout(layout)
    is_numpy = not isinstance(activations, torch.Tensor)
    tensor = torch.from_numpy(np.asarray(activations)) if is_numpy else activations
    shape = tuple(tensor.shape)
    if tensor.ndim < 2:
        raise InputError(f"activations of shape {shape}: need (n, features), (n, C, *spatial) or (n, T, D)")
    if tensor.ndim == 2:
        return activations
    if layout == "flat":
        raise InputError(f"activations of shape {shape} are not flat (n, features): name their layout, "
                         f"'conv' (n, C, *spatial) or 'sequence' (n, T, D)")
    if layout == "sequence" and tensor.ndim != 3:
        raise InputError(f"activations of shape {shape} are not a token sequence (n, T, D); "
                         f"name their layout ('conv' for (n, C, *spatial))")
    if reduction is None:
        raise InputError(f"activations of shape {shape} ({layout} layout) need a reduction: "
                         f"{reduction_options(layout)}")
    if reduction not in LAYOUT_REDUCTIONS[layout]:
        raise InputError(f"reduction {reduction!r} does not apply to the {layout} layout of shape {shape}; "
                         f"choose {reduction_options(layout)}")
    if layout == "conv":
        result = _reduce_conv_map(tensor, reduction)
    elif reduction == "tokens":
        result = tensor.reshape(-1, tensor.shape[2])
    elif reduction == "mean":
        result = tensor.mean(dim=1)
    elif reduction == "first":
        result = tensor[:, 0]
    else:
        result = tensor.reshape(tensor.shape[0], -1)
    return result.numpy() if is_numpy else result


def reduce_conv(activations, mode: str):
    """Reduce conv maps ``(n, C, *spatial)`` with at least two spatial dimensions (or 2-D input, returned
    unchanged) to 2-D by ``mode`` (see the module docs); numpy or torch in, same out.

    3-D activations are refused: ``(n, C, L)`` conv maps and ``(n, T, D)`` token sequences have the same
    shape and opposite meanings; use :func:`reduce_activations` with ``layout="conv"`` or ``"sequence"``.
    """
    if mode not in REDUCTIONS:
        raise InputError(f"unknown reduction {mode!r}; choose one of {REDUCTIONS}")
    ndim = len(getattr(activations, "shape", np.shape(activations)))
    if ndim == 3:
        raise InputError(f"3-D activations of shape {tuple(np.shape(activations))} are either conv maps (n, C, L) "
                         f"or token sequences (n, T, D): use reduce_activations(acts, layout='conv' | 'sequence', "
                         f"reduction=...)")
    return reduce_activations(activations, "conv", mode)


def _reduce_conv_map(tensor: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "flatten":
        return tensor.reshape(tensor.shape[0], -1)
    if mode == "mean":
        return tensor.mean(dim=tuple(range(2, tensor.ndim)))
    channels = tensor.shape[1]
    return tensor.reshape(tensor.shape[0], channels, -1).transpose(1, 2).reshape(-1, channels)
