"""The private torch calls of the Conv4 episode path (:mod:`repana.meta.inner.conv4_episode`), in one place.

The path writes its backward pass out with the kernels autograd itself runs for the same ops, so its
numbers are autograd's to the bit. These kernels are ATen internals (``torch.ops.aten``, underscore names),
not public API: a torch upgrade may change their signatures or meaning. tests/test_aten_kernels.py checks
each schema against the installed torch and each function here against autograd, and fails loudly when
one changes.

Public replacements were measured on a trained checkpoint's episodes (5-way 1-shot, 10 steps):
``torch.nn.grad.conv2d_input`` / ``conv2d_weight`` give the same bits as ``convolution_backward``, but the
conv bias gradient as a sum over the map, batch norm's backward written as a formula in torch ops and the
cross-entropy gradient through ``exp(log_probs)`` round differently in the last bits (the exponential of
``torch.exp`` is not the one inside the log-softmax kernel), and those bits move the logits of a 10-step
adaptation: evaluation numbers would change. So the kernels stay, here.

Shapes: maps ``(n, C, H, W)`` (channels-last on CPU float32), logits ``(n, classes)``; every function
returns new tensors except :func:`subtract_scaled_`.
"""

from __future__ import annotations

from typing import Sequence

import torch

aten = torch.ops.aten


def batch_norm_with_statistics(z: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                               eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch norm of ``z`` with its own batch statistics: ``(output, mean (C,), invstd (C,))``, the
    statistics :func:`batch_norm_backward` takes."""
    return torch.native_batch_norm(z, gamma, beta, None, None, True, 0.0, eps)


def max_pool_2x2(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2x2 max-pool with stride 2: ``(pooled, indices)``, the indices :func:`max_pool_2x2_backward` takes."""
    return aten.max_pool2d_with_indices(y, [2, 2], [2, 2])


def cross_entropy_logits_gradient(target: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """``d loss / d logits`` from ``target = d loss / d log_probs`` and ``log_probs = log_softmax(logits, 1)``
    (``(n, classes)``): the log-softmax backward of cross-entropy."""
    return torch._log_softmax_backward_data(target, log_probs, 1, log_probs.dtype)


def relu_backward(grad: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """``grad`` where the ReLU output ``activation`` is positive, 0 elsewhere."""
    return aten.threshold_backward(grad, activation, 0)


def max_pool_2x2_backward(grad: torch.Tensor, pool_input: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The gradient of :func:`max_pool_2x2`'s input (the shape of ``pool_input``)."""
    return aten.max_pool2d_with_indices_backward(grad, pool_input, [2, 2], [2, 2], [0, 0], [1, 1], False, indices)


def batch_norm_backward(grad: torch.Tensor, z: torch.Tensor, gamma: torch.Tensor, mean: torch.Tensor,
                        invstd: torch.Tensor, eps: float,
                        mask: Sequence[bool]) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of :func:`batch_norm_with_statistics` w.r.t. (input, gamma, beta), those ``mask`` asks for."""
    return aten.native_batch_norm_backward(grad, z, gamma, None, None, mean, invstd, True, eps, mask)


def conv3x3_backward(grad: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, stride: Sequence[int],
                     mask: Sequence[bool]) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of ``conv2d(h, weight, bias, stride, padding=1)`` w.r.t. (input, weight, bias), those
    ``mask`` asks for."""
    return aten.convolution_backward(grad, h, weight, [weight.shape[0]], stride, [1, 1], [1, 1], False, [0, 0], 1, mask)


def subtract_scaled_(tensors: list[torch.Tensor], updates: list[torch.Tensor], lr: float) -> None:
    """``tensor -= lr * update`` for each pair, in place, in one call."""
    torch._foreach_add_(tensors, updates, alpha=-lr)
