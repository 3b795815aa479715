"""The private torch calls behind the Conv4 episode path's hand-written backward
(repana.meta.inner.aten_kernels), checked against the installed torch.

The path calls the kernels autograd itself runs (``_log_softmax_backward_data``, ``threshold_backward``,
``max_pool2d_with_indices_backward``, ``native_batch_norm_backward``, ``convolution_backward``, and
``_foreach_add_`` for the step). They are not public API: a torch upgrade may change their signatures or
meaning. This is the one place that says so loudly: each kernel's schema must be the one the module was
written against, and each function of repana.meta.inner.aten_kernels must give autograd's gradient on random
float64 tensors. When a test here fails after a torch upgrade, fix aten_kernels (or route evaluation to the
generic path) before trusting the numbers of repana.meta.inner.conv4_episode.
"""

import pytest
import torch
import torch.nn.functional as F

from repana.meta.inner import aten_kernels as kernels

aten = torch.ops.aten

# The schemas aten_kernels was written against (torch 2.13).
SCHEMAS = {
    "_log_softmax_backward_data": "aten::_log_softmax_backward_data(Tensor grad_output, Tensor output, int dim, "
                                  "ScalarType input_dtype) -> Tensor",
    "threshold_backward": "aten::threshold_backward(Tensor grad_output, Tensor self, Scalar threshold) -> Tensor",
    "max_pool2d_with_indices": "aten::max_pool2d_with_indices(Tensor self, int[2] kernel_size, int[2] stride=[], "
                               "int[2] padding=0, int[2] dilation=1, bool ceil_mode=False) -> (Tensor, Tensor)",
    "max_pool2d_with_indices_backward": "aten::max_pool2d_with_indices_backward(Tensor grad_output, Tensor self, "
                                        "int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
                                        "bool ceil_mode, Tensor indices) -> Tensor",
    "native_batch_norm": "aten::native_batch_norm(Tensor input, Tensor? weight, Tensor? bias, Tensor? running_mean, "
                         "Tensor? running_var, bool training, float momentum, float eps) -> (Tensor, Tensor, Tensor)",
    "native_batch_norm_backward": "aten::native_batch_norm_backward(Tensor grad_out, Tensor input, Tensor? weight, "
                                  "Tensor? running_mean, Tensor? running_var, Tensor? save_mean, "
                                  "Tensor? save_invstd, bool train, float eps, bool[3] output_mask) "
                                  "-> (Tensor, Tensor, Tensor)",
    "convolution_backward": "aten::convolution_backward(Tensor grad_output, Tensor input, Tensor weight, "
                            "SymInt[]? bias_sizes, SymInt[] stride, SymInt[] padding, SymInt[] dilation, "
                            "bool transposed, SymInt[] output_padding, SymInt groups, bool[3] output_mask) "
                            "-> (Tensor, Tensor, Tensor)",
    "_foreach_add_": "aten::_foreach_add_.List(Tensor(a!)[] self, Tensor[] other, *, Scalar alpha=1) -> ()",
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_is_the_one_aten_kernels_calls(name):
    overload = "List" if name == "_foreach_add_" else "default"
    assert str(getattr(getattr(aten, name), overload)._schema) == SCHEMAS[name], (
        f"torch {torch.__version__} changed aten::{name}; review repana/meta/inner/aten_kernels.py")


def _autograd(function, *inputs):
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = function(*leaves)
    upstream = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    return torch.autograd.grad(out, leaves, upstream), upstream


def test_kernels_give_autograds_gradients():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, 8, 8, dtype=torch.float64, generator=g)
    w = torch.randn(5, 4, 3, 3, dtype=torch.float64, generator=g)
    b = torch.randn(5, dtype=torch.float64, generator=g)
    # convolution
    (gx, gw, gb), up = _autograd(lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), x, w, b)
    kx, kw, kb = kernels.conv3x3_backward(up, x, w, [2, 2], [True] * 3)
    for ours, theirs in ((kx, gx), (kw, gw), (kb, gb)):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    # batch norm with batch statistics
    gamma, beta = torch.rand(4, dtype=torch.float64, generator=g) + 0.5, torch.randn(4, dtype=torch.float64, generator=g)
    (gx, gg, gbeta), up = _autograd(lambda x, gm, bt: F.batch_norm(x, None, None, gm, bt, True, 0.0, 1e-5), x, gamma, beta)
    y, mean, invstd = kernels.batch_norm_with_statistics(x, gamma, beta, 1e-5)
    torch.testing.assert_close(y, F.batch_norm(x, None, None, gamma, beta, True, 0.0, 1e-5), rtol=0, atol=0)
    kx, kg, kbeta = kernels.batch_norm_backward(up, x, gamma, mean, invstd, 1e-5, [True] * 3)
    for ours, theirs in ((kx, gx), (kg, gg), (kbeta, gbeta)):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    # max pool 2x2 and ReLU
    (gx,), up = _autograd(lambda x: F.max_pool2d(x, 2, 2), x)
    pooled, indices = kernels.max_pool_2x2(x)
    torch.testing.assert_close(pooled, F.max_pool2d(x, 2, 2), rtol=0, atol=0)
    torch.testing.assert_close(kernels.max_pool_2x2_backward(up, x, indices), gx, rtol=0, atol=0)
    (gx,), up = _autograd(torch.relu, x)
    torch.testing.assert_close(kernels.relu_backward(up, torch.relu(x)), gx, rtol=0, atol=0)
    # cross-entropy through log_softmax: the kernel receives the target-side gradient d loss / d log_probs
    logits, labels = torch.randn(7, 5, dtype=torch.float64, generator=g), torch.arange(7) % 5
    leaf = logits.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(F.cross_entropy(leaf, labels, reduction="sum"), leaf)
    target = -F.one_hot(labels, 5).to(torch.float64)
    ours = kernels.cross_entropy_logits_gradient(target, torch.log_softmax(logits, 1))
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)


def test_the_step_subtracts_lr_times_each_update_in_place():
    g = torch.Generator().manual_seed(2)
    tensors = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g, dtype=torch.float64)]
    updates = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in tensors]
    expected = [torch.add(t, u, alpha=-0.7) for t, u in zip(tensors, updates)]
    storages = [t.data_ptr() for t in tensors]
    kernels.subtract_scaled_(tensors, updates, 0.7)
    for t, e, ptr in zip(tensors, expected, storages):
        assert torch.equal(t, e) and t.data_ptr() == ptr
