"""The paper's backbone: Conv4 of Finn et al. (2017), with stable layer names and a body/head split.

Architecture (``pooling="max"``): four blocks ``conv3x3(pad 1) -> batch norm -> ReLU -> 2x2 max-pool``,
then ``flatten -> Linear`` (the head). With ``pooling="stride"`` the convs have stride 2 and there is no
pooling (the original MAML Omniglot network). 64 filters for Omniglot, 32 for MiniImageNet.

Parameter names (what ``named_parameters()`` and the parameter dicts of :mod:`repana.meta` use)::

    conv{i}.conv.weight, conv{i}.conv.bias, conv{i}.bn.weight, conv{i}.bn.bias   i = 1..4   (the body)
    head.weight (n_classes, n_features), head.bias (n_classes,)                           (the head)

:func:`is_head_parameter` is the one predicate that tells them apart; :func:`is_batch_norm_parameter`
picks the batch-norm affine parameters (``conv{i}.bn.*``; ResNetSmall's ``bn1``, ``bn2`` and shortcut
batch norm).

Batch norm, as in MAML: ``bn_stats="batch"`` normalises with the statistics of the current batch, in
training *and* at test time (no running statistics are kept, so ``model.eval()`` changes nothing);
``bn_stats="running"`` is standard PyTorch batch norm (batch statistics in ``train()``, running ones in
``eval()``).

Every block also accepts a batch of tasks ``(tasks, n, C, H, W)``: the conv weights are shared and the
batch-norm statistics are computed per task, exactly as if each task had been run on its own (used on
CUDA for the features of a meta-batch when the body does not adapt, with :func:`per_task_batch_norm`;
on CPU a loop over tasks is faster).

Memory layout: on CPU, float32 conv maps are channels-last (:class:`Conv3x3`), which oneDNN runs without
reordering to its blocked format and which makes batch norm about 2.7x faster than on NCHW maps.
A one-channel batch ``(n, 1, H, W)`` is NCHW-contiguous whatever its strides, so oneDNN would return
NCHW for conv1 on Omniglot: it gets a second, all-zero input channel (and a zero weight slice), which
adds exact zeros and makes a true channels-last input. Measured on one thread (Conv4-64 on 75
Omniglot images; meta-batch 16, 5-way 1-shot, 15 queries): inference 1.2x (stride) to 1.5x (max-pool)
faster than NCHW, MAML/FOMAML/ANIL training steps 1.1x-1.2x; MiniImageNet Conv4-32 84x84 training ANIL
1.4x, MAML 1.02x. float64 and CUDA run ``nn.Conv2d`` unchanged. Values agree up to float32 rounding;
``flatten`` gives the usual NCHW feature order.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from repana.errors import ConfigError, InputError

LAYER_NAMES = ("conv1", "conv2", "conv3", "conv4", "head")
POOLINGS = ("max", "stride")
BN_STATS = ("batch", "running")
HEAD_INPUTS = ("flatten", "spatial_mean")


def is_head_parameter(name: str) -> bool:
    """True for the head's parameters (``head.weight``, ``head.bias``), False for the body's."""
    return name == "head" or name.startswith("head.")


def is_batch_norm_parameter(name: str) -> bool:
    """True for a batch-norm affine parameter (scale or shift) of :class:`Conv4` (``conv{i}.bn.weight``,
    ``conv{i}.bn.bias``) or :class:`ResNetSmall` (``block{i}.bn1.*``, ``block{i}.bn2.*``, and the shortcut's
    batch norm ``block{i}.shortcut.1.*``); False for conv, linear and head parameters."""
    parts = name.split(".")[:-1]
    return any(part == "bn" or (part.startswith("bn") and part[2:].isdigit()) for part in parts) or \
        any(a == "shortcut" and b == "1" for a, b in zip(parts, parts[1:]))


def layer_of(name: str) -> str:
    """The layer (a name in ``model.layer_names``) a parameter belongs to: ``"conv2.bn.weight"`` -> ``"conv2"``."""
    return name.split(".", 1)[0]


def is_conv4(model: nn.Module) -> bool:
    """True for a :class:`Conv4`: the backbone the Conv4 paths of the inner loop know
    (:mod:`repana.meta.inner.folded`, :mod:`repana.meta.inner.conv4_episode`)."""
    return isinstance(model, Conv4)


def _runs_channels_last(x: torch.Tensor) -> bool:
    """True when a conv on ``x`` runs channels-last: a CPU float32 image batch (see the module doc)."""
    return x.dim() == 4 and x.dtype == torch.float32 and x.device.type == "cpu"


def _one_channel_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         stride: int) -> torch.Tensor:
    """3x3 convolution, padding 1, of one-channel images ``x (n, 1, H, W)`` with ``weight (C_out, 1, 3, 3)``:
    output ``(n, C_out, H', W')`` in channels-last memory.

    The input and weight get a second, all-zero channel (its products are exact zeros, so the values are
    the one-channel convolution's), which makes the input truly channels-last for oneDNN. Measured on one
    thread against the matrix product of 3x3 patches this replaced (Conv4 on 5-75 Omniglot images):
    max-pool nets 1.05-1.17x faster in inference and 1.05-1.08x in second-order steps; stride-2 nets
    0.98-1.07x (conv1 is 3% of their FLOPs).
    """
    zero_channel = (0, 0, 0, 0, 0, 1)
    x2 = F.pad(x, zero_channel).contiguous(memory_format=torch.channels_last)
    return F.conv2d(x2, F.pad(weight, zero_channel), bias, stride, 1)


class Conv3x3(nn.Conv2d):
    """``nn.Conv2d`` 3x3 with padding 1 whose CPU float32 forward writes channels-last maps (module doc).

    Multi-channel inputs are switched to channels-last before oneDNN runs them; one-channel images
    (Omniglot), which are NCHW-contiguous whatever their strides, get an all-zero second channel first
    (:func:`_one_channel_conv3x3`). Elsewhere (float64, CUDA) it is
    ``nn.Conv2d``. Same parameters, state dict, hooks and autograd (any order) as ``nn.Conv2d``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size=3, stride=stride, padding=1)

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if not _runs_channels_last(x):
            return super()._conv_forward(x, weight, bias)
        if self.in_channels == 1:
            return _one_channel_conv3x3(x, weight, bias, self.stride[0])
        return super()._conv_forward(x.contiguous(memory_format=torch.channels_last), weight, bias)


def rectify_and_pool(h: torch.Tensor, pooling: str) -> torch.Tensor:
    """ReLU, then 2x2 max-pooling when ``pooling == "max"``: a block's output from its normalised map
    ``(n, C, H, W)`` -> ``(n, C, H, W)`` (stride) or ``(n, C, H // 2, W // 2)`` (max).

    With max-pooling the ReLU runs after the pool: relu(max_pool(h)) == max_pool(relu(h)), values and
    gradients (ReLU is monotone), on a 4x smaller map, in place (the pooled map is internal to the block).
    """
    if pooling == "max":
        return torch.relu_(F.max_pool2d(h, 2))
    return torch.relu(h)


def per_task_batch_norm(h: torch.Tensor, tasks: int, weight: torch.Tensor, bias: torch.Tensor,
                        eps: float) -> torch.Tensor:
    """Training-mode batch norm of ``h (tasks * n, C, H, W)`` with each task's own statistics (biased
    variance over its ``n`` images and the pixels), then the shared affine ``weight, bias (C,)``.

    Equal to ``F.batch_norm`` on each task's slice, to rounding, in value and in derivatives of any
    order; used on CUDA, where it costs a fixed number of kernels for any number of tasks.
    """
    x = h.reshape(tasks, -1, *h.shape[1:])                                   # (tasks, n, C, H, W)
    var, mean = torch.var_mean(x, dim=(1, 3, 4), correction=0, keepdim=True)
    scale = torch.rsqrt(var + eps) * weight.view(1, 1, -1, 1, 1)
    return ((x - mean) * scale + bias.view(1, 1, -1, 1, 1)).reshape(h.shape)


class ConvBlock(nn.Module):
    """conv3x3 -> batch norm -> ReLU -> (2x2 max-pool | nothing when the conv has stride 2).

    (With max-pooling the ReLU runs after the pool: the same values and gradients, 4x fewer elements.)

    Input ``(n, C_in, H, W)`` or a batch of tasks ``(tasks, n, C_in, H, W)`` (per-task batch-norm
    statistics); output ``(n, C_out, H', W')`` or ``(tasks, n, C_out, H', W')``, float.
    """

    def __init__(self, in_channels: int, out_channels: int, pooling: str = "max", bn_stats: str = "batch"):
        super().__init__()
        stride = 2 if pooling == "stride" else 1
        self.conv = Conv3x3(in_channels, out_channels, stride=stride)
        self.bn = nn.BatchNorm2d(out_channels, track_running_stats=(bn_stats == "running"))
        self.pooling = pooling
        self.bn_stats = bn_stats

    def _normalise(self, h: torch.Tensor, tasks: int | None) -> torch.Tensor:
        bn = self.bn
        use_batch_stats = self.bn_stats == "batch" or self.training
        if tasks is None:
            return bn(h)
        if not use_batch_stats:  # running statistics: the same affine map for every task
            return bn(h)
        if self.bn_stats == "running":
            raise InputError("a batch of tasks (5-D input) with bn_stats='running' in train mode would need "
                             "per-task running statistics: run the tasks one at a time, or call model.eval()")
        if h.is_cuda:  # a fixed number of kernels whatever the number of tasks (chunks launch one per task)
            return per_task_batch_norm(h, tasks, bn.weight, bn.bias, bn.eps)
        # CPU: batch norm on contiguous per-task slices (measured faster than folding the tasks into
        # channels, which needs two transposes; one task's slice stays in cache).
        chunks = h.chunk(tasks)
        return torch.cat([F.batch_norm(c, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
                          for c in chunks])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tasks = None
        if x.dim() == 5:
            tasks = x.shape[0]
            leading = x.shape[:2]
            x = x.flatten(0, 1)
        h = rectify_and_pool(self._normalise(self.conv(x), tasks), self.pooling)
        return h if tasks is None else h.reshape(*leading, *h.shape[1:])


def _spatial_after(size: int, pooling: str) -> int:
    for _ in range(4):
        size = (size + 2 - 3) // 2 + 1 if pooling == "stride" else size // 2
    return size


class Conv4(nn.Module):
    """Conv4 backbone + linear head, named children ``conv1..conv4`` (blocks) and ``head`` (Linear).

    Args:
        in_channels: 1 (Omniglot) or 3 (MiniImageNet).
        n_classes: outputs of the head (the ways N, or all meta-training classes for multiclass).
        hidden: filters per block (64 Omniglot, 32 MiniImageNet).
        image_size: side of the square input in pixels (28 Omniglot, 84 MiniImageNet).
        pooling: "max" (2x2 max-pool after each block) or "stride" (stride-2 convs, no pooling).
        bn_stats: "batch" (MAML: batch statistics also at test time) or "running".
        head_input: what the head sees of conv4's map ``(C, H', W')``: "flatten" (``C*H'*W'``
            features, repana's default and Finn et al.'s MiniImageNet network) or "spatial_mean" (the
            map averaged over space, ``C`` features: Finn et al.'s Omniglot network, whose code takes
            ``reduce_mean`` over the two spatial axes). The penultimate features (:meth:`features`,
            NIL) are the head's input either way.

    ``model.config`` holds every argument (``head_input`` only when not "flatten", so the configs
    of checkpoints written before the option existed still compare equal).

    ``model(x)``: ``x`` float ``(n, C, H, W)`` -> logits ``(n, n_classes)``; ``(tasks, n, C, H, W)`` ->
    ``(tasks, n, n_classes)``. ``model(x, start=i, stop=j)`` runs only ``layer_names[i:j]`` (the input
    of layer ``i`` is the output of layer ``i-1``; the flatten happens before ``head``).
    """

    layer_names = list(LAYER_NAMES)

    def __init__(self, in_channels: int = 1, n_classes: int = 5, hidden: int = 64, image_size: int = 28,
                 pooling: str = "max", bn_stats: str = "batch", head_input: str = "flatten"):
        super().__init__()
        if head_input not in HEAD_INPUTS:
            raise ConfigError(f"head_input = {head_input!r} is not one of {HEAD_INPUTS}")
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling = {pooling!r} is not one of {POOLINGS}")
        if bn_stats not in BN_STATS:
            raise ConfigError(f"bn_stats = {bn_stats!r} is not one of {BN_STATS}")
        for key, value in (("in_channels", in_channels), ("n_classes", n_classes), ("hidden", hidden)):
            if int(value) < 1:
                raise ConfigError(f"{key} = {value} must be at least 1")
        side = _spatial_after(int(image_size), pooling)
        if side < 1:
            raise ConfigError(f"image_size = {image_size} is too small for four {pooling} blocks "
                              f"(needs at least 16 pixels with max-pooling)")
        self.config: dict[str, Any] = {"in_channels": int(in_channels), "n_classes": int(n_classes),
                                       "hidden": int(hidden), "image_size": int(image_size),
                                       "pooling": pooling, "bn_stats": bn_stats}
        if head_input != "flatten":
            self.config["head_input"] = head_input
        self.bn_stats = bn_stats
        self.head_input = head_input
        self.n_features = int(hidden) * (side * side if head_input == "flatten" else 1)
        channels = [int(in_channels)] + [int(hidden)] * 4
        for i in range(4):
            self.add_module(f"conv{i + 1}", ConvBlock(channels[i], channels[i + 1], pooling, bn_stats))
        self.head = nn.Linear(self.n_features, int(n_classes))

    def forward(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        stop = len(LAYER_NAMES) if stop is None else stop
        if not 0 <= start <= stop <= len(LAYER_NAMES):
            raise InputError(f"layer range [{start}, {stop}) is outside 0..{len(LAYER_NAMES)}")
        h = x
        for name in LAYER_NAMES[start:stop]:
            if name == "head" and start < 4:  # conv4's (.., C, H, W) map -> the head's input
                h = self.head_features(h)
            h = getattr(self, name)(h)
        if stop == 4 and start < 4:  # penultimate features are the head's input
            h = self.head_features(h)
        return h

    def head_features(self, conv4_map: torch.Tensor) -> torch.Tensor:
        """conv4's map ``(..., C, H', W')`` -> the head's input ``(..., n_features)`` (see ``head_input``)."""
        if self.head_input == "spatial_mean":
            return conv4_map.mean(dim=(-2, -1))
        return conv4_map.flatten(-3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: ``(n, C, H, W) -> (n, n_features)`` (or per task with 5-D input)."""
        return self(x, stop=4)

    @staticmethod
    def macs_per_image(in_channels: int = 1, hidden: int = 64, image_size: int = 28, pooling: str = "max",
                       **_) -> int:
        """Multiply-adds of the four 3x3 convolutions on one image (the head's few are left out), from
        the constructor's arguments (``**model.config``)."""
        side, channels, total = int(image_size), [int(in_channels)] + [int(hidden)] * 4, 0
        for block in range(4):
            out_side = (side - 1) // 2 + 1 if pooling == "stride" else side
            total += out_side * out_side * channels[block] * channels[block + 1] * 9
            side = out_side if pooling == "stride" else out_side // 2
        return total


class ResidualBlock(nn.Module):
    """Pre-activation-free residual block: ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``, then 2x2
    max-pool. The first conv and the shortcut (1x1 conv + batch norm, present when the channels change)
    map ``C_in`` to ``C_out``. Input ``(n, C_in, H, W)`` -> ``(n, C_out, H // 2, W // 2)``.
    """

    def __init__(self, in_channels: int, out_channels: int, bn_stats: str = "batch"):
        super().__init__()
        track = bn_stats == "running"
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels, track_running_stats=track)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels, track_running_stats=track)
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1),
                                          nn.BatchNorm2d(out_channels, track_running_stats=track))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))
        return F.max_pool2d(h, 2)


class ResNetSmall(nn.Module):
    """A small ResNet-style backbone + linear head: ``block1..block{n_blocks}`` (:class:`ResidualBlock`,
    each halving the side), a spatial mean, then ``head`` (Linear).

    The second backbone of repana: the meta-learning code only relies on what it declares, the same
    protocol as :class:`Conv4`: ``layer_names`` (the blocks, then ``"head"``), ``forward(x, start=, stop=)``
    running ``layer_names[start:stop]``, ``features(x)`` = the head's input ``(n, hidden)``, a ``head``
    Linear whose parameters :func:`is_head_parameter` selects, ``bn_stats`` and ``config`` (with
    ``"arch": "resnet"``, so :func:`build_model` rebuilds it). A batch of tasks ``(tasks, n, C, H, W)``
    runs task by task (per-task batch statistics).
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 5, hidden: int = 32, image_size: int = 28,
                 n_blocks: int = 3, bn_stats: str = "batch"):
        super().__init__()
        if bn_stats not in BN_STATS:
            raise ConfigError(f"bn_stats = {bn_stats!r} is not one of {BN_STATS}")
        for key, value in (("in_channels", in_channels), ("n_classes", n_classes), ("hidden", hidden),
                           ("n_blocks", n_blocks)):
            if int(value) < 1:
                raise ConfigError(f"{key} = {value} must be at least 1")
        if int(image_size) >> int(n_blocks) < 1:
            raise ConfigError(f"image_size = {image_size} is too small for {n_blocks} blocks that halve it")
        self.config: dict[str, Any] = {"arch": "resnet", "in_channels": int(in_channels),
                                       "n_classes": int(n_classes), "hidden": int(hidden),
                                       "image_size": int(image_size), "n_blocks": int(n_blocks),
                                       "bn_stats": bn_stats}
        self.bn_stats = bn_stats
        self.n_features = int(hidden)
        self.layer_names = [f"block{i + 1}" for i in range(int(n_blocks))] + ["head"]
        channels = [int(in_channels)] + [int(hidden)] * int(n_blocks)
        for i in range(int(n_blocks)):
            self.add_module(f"block{i + 1}", ResidualBlock(channels[i], channels[i + 1], bn_stats))
        self.head = nn.Linear(self.n_features, int(n_classes))

    def forward(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        if x.dim() == 5:  # a batch of tasks: each with its own batch statistics
            return torch.stack([self(task, start, stop) for task in x])
        n_layers = len(self.layer_names)
        stop = n_layers if stop is None else stop
        if not 0 <= start <= stop <= n_layers:
            raise InputError(f"layer range [{start}, {stop}) is outside 0..{n_layers}")
        h = x
        for name in self.layer_names[start:stop]:
            if name == "head" and start < n_layers - 1:
                h = h.mean(dim=(-2, -1))
            h = getattr(self, name)(h)
        if stop == n_layers - 1 and start < stop:
            h = h.mean(dim=(-2, -1))
        return h

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: ``(n, C, H, W) -> (n, hidden)``."""
        return self(x, stop=len(self.layer_names) - 1)

    @staticmethod
    def macs_per_image(**_) -> None:
        """Not counted: None, which the thread policy takes as large work (the idle cores)."""
        return None


ARCHITECTURES = {"conv4": Conv4, "resnet": ResNetSmall}


def _architecture(config: dict) -> tuple[type[nn.Module], dict]:
    """The class ``config["arch"]`` names (default "conv4") and the other keys; ConfigError for an unknown one."""
    config = dict(config)
    arch = config.pop("arch", "conv4")
    if arch not in ARCHITECTURES:
        raise ConfigError(f"arch = {arch!r} is not one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch], config


def build_model(config: dict) -> nn.Module:
    """Rebuild a model from ``model.config`` (a plain dict); unknown keys raise ConfigError.

    ``config["arch"]`` chooses the backbone: "conv4" (the default: configs without the key, as every
    checkpoint written before there was a second backbone) or "resnet" (:class:`ResNetSmall`).
    """
    cls, config = _architecture(config)
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = set(config) - allowed
    if unknown:
        raise ConfigError(f"unknown model config keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    return cls(**config)


def forward_macs(config: dict, images: int = 1) -> int | None:
    """Multiply-adds of one forward pass of the model ``build_model(config)`` over ``images`` images (its
    convolutions; ``config``: ``model.config``), or None where the architecture has no count (the residual
    network): the work size the thread policy takes (:func:`repana.runtime.choose_threads`)."""
    cls, config = _architecture(config)
    per_image = cls.macs_per_image(**config)
    return None if per_image is None else per_image * int(images)
