"""The one functional inner loop: gradient steps on a task's support set, parameters as a dict.

``adapt`` runs ``steps`` steps of plain gradient descent on the support loss of one episode, on the
parameters selected by ``trainable``, through ``torch.func.functional_call``; it returns a new
parameter dict and never modifies the model or the given tensors.

* second order (``first_order=False``): the returned tensors are differentiable functions of the
  given ones (inner gradients taken with ``create_graph=True``), so a query loss computed with them
  back-propagates the exact MAML meta-gradient;
* first order (``first_order=True``): inner gradients are computed on detached copies, so
  ``d new / d old`` is the identity (FOMAML); this is also what evaluation uses (cheaper, same result).

Frozen layers at the bottom of the network are run once, not once per step: when every parameter
of ``conv1..convk`` is frozen, their output on the support set is computed once and the steps run
``conv(k+1)..head`` only (ANIL: features once, the head's loop on fixed features). With batch-statistic
batch norm this is exact, because a frozen layer sees the same inputs at every step.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch.func import functional_call

from repana.errors import InputError

Params = dict[str, torch.Tensor]
Trainable = None | str | Callable[[str], bool] | Iterable[str]

INNER_LOSSES = ("mean", "sum_over_shots")   # the values of TrainConfig.inner_loss, the one vocabulary
# Former spelling, accepted for code that uses it.
_INNER_LOSS_ALIASES = {"sum_div_k": "sum_over_shots"}


def normalise_inner_loss(inner_loss: str) -> str:
    """``"mean"`` or ``"sum_over_shots"`` (``"sum_div_k"`` is accepted as an alias of the latter)."""
    value = _INNER_LOSS_ALIASES.get(inner_loss, inner_loss)
    if value not in INNER_LOSSES:
        raise InputError(f"inner_loss = {inner_loss!r} is not one of {INNER_LOSSES}: 'mean' averages "
                         "the support loss over examples; 'sum_over_shots' sums it and divides by the shots K "
                         "(original MAML code; its inner lr is N times a 'mean' lr)")
    return value


def mean_loss_lr(lr: float, inner_loss: str, support_y: torch.Tensor) -> float:
    """The step size that, on the mean support loss, takes the same steps as ``lr`` on the
    ``inner_loss`` loss: the one place the loss convention is handled (every inner loop of repana
    runs on the mean loss).

    "sum_over_shots" (the loss summed over the n support examples and divided by the shots K) is n / K
    (= ways, for balanced episodes) times the mean, so its steps are those of ``lr * n / K`` on the
    mean. ``support_y``: int64 ``(n,)`` or ``(tasks, n)`` (balanced episodes: the first task's K).
    """
    inner_loss = normalise_inner_loss(inner_loss)
    if inner_loss == "mean":
        return float(lr)
    labels = support_y[0] if support_y.dim() == 2 else support_y
    return float(lr) * labels.numel() / shots_of(labels)


def shots_of(support_y: torch.Tensor) -> int:
    """Shots K of an episode's labels ``(n,)`` = n / number of distinct labels (balanced episodes)."""
    ways = int(torch.unique(support_y).numel())
    return max(1, support_y.numel() // max(ways, 1))


def resolve_trainable(names: Iterable[str], trainable: Trainable) -> list[str]:
    """The parameter names (in ``names`` order) that adapt.

    ``trainable``: ``None`` or ``"all"`` (every parameter), ``"head"``, ``"body"``, a predicate
    ``name -> bool``, or a collection of parameter names and/or layer names (``"conv4"`` selects every
    ``conv4.*`` parameter). An empty collection freezes everything (no adaptation).
    """
    from repana.models import is_head_parameter

    names = list(names)
    if trainable is None or trainable == "all":
        return names
    if trainable == "head":
        return [n for n in names if is_head_parameter(n)]
    if trainable == "body":
        return [n for n in names if not is_head_parameter(n)]
    if isinstance(trainable, str):
        trainable = [trainable]
    if callable(trainable):
        return [n for n in names if trainable(n)]
    wanted = set(trainable)
    chosen = [n for n in names if n in wanted or n.split(".", 1)[0] in wanted]
    matched = {w for w in wanted if any(n == w or n.split(".", 1)[0] == w for n in names)}
    unknown = wanted - matched
    if unknown:
        layers = sorted({n.split(".", 1)[0] for n in names})
        raise InputError(f"trainable names {sorted(unknown)} match no parameter; layers are {layers}, "
                         f"parameters look like {names[0]!r}")
    return chosen


def all_parameters(name: str) -> bool:
    """Every parameter adapts (MAML, FOMAML, Reptile): the predicate form of ``trainable=None``."""
    return True


def head_parameters(name: str) -> bool:
    """Only the head adapts (ANIL; every algorithm without an inner loop at test time)."""
    from repana.models import is_head_parameter

    return is_head_parameter(name)


def body_parameters(name: str) -> bool:
    """Every parameter but the head's adapts (BOIL, arXiv 2008.08882: the head is frozen in the inner loop)."""
    from repana.models import is_head_parameter

    return not is_head_parameter(name)


def without_batch_norm(trainable: Trainable) -> Callable[[str], bool]:
    """``trainable`` minus the batch-norm affine parameters, as a predicate (Finn et al.'s convention,
    github.com/cbfinn/maml utils.py ``normalize``: batch norm is not in the weights the inner loop updates,
    so it is learned by the outer loop only). See :func:`repana.models.is_batch_norm_parameter`."""
    from repana.models import is_batch_norm_parameter

    base = trainable_predicate(trainable)

    def selected(name: str) -> bool:
        return base(name) and not is_batch_norm_parameter(name)

    selected.__name__ = f"{getattr(base, '__name__', 'trainable')}_without_batch_norm"
    return selected


def trainable_predicate(trainable: Trainable) -> Callable[[str], bool]:
    """``trainable`` (any form :func:`resolve_trainable` takes) as a predicate ``parameter name -> bool``.

    Layer names in a collection select all of the layer's parameters; unlike :func:`resolve_trainable`,
    names that match nothing are not checked here (there are no names to check against).
    """
    from repana.models import layer_of

    if trainable is None or trainable == "all":
        return all_parameters
    if trainable == "head":
        return head_parameters
    if trainable == "body":
        return body_parameters
    if callable(trainable):
        return trainable
    wanted = frozenset([trainable] if isinstance(trainable, str) else trainable)
    return lambda name: name in wanted or layer_of(name) in wanted


def freeze_layers(trainable: Trainable, frozen_layers: Iterable[str | int],
                  layer_names: Iterable[str] | None = None) -> Callable[[str], bool]:
    """``trainable`` minus every parameter of the layers ``frozen_layers``, as a predicate.

    ``frozen_layers``: layer names (``"conv1"``, ``"block2"``: names in ``model.layer_names``) or
    1-based positions in ``layer_names`` (default Conv4's: 1 -> ``"conv1"``), as in the paper's
    freezing table (``(1, 2)`` freezes conv1 and conv2).
    """
    from repana.models import LAYER_NAMES, layer_of

    order = list(LAYER_NAMES if layer_names is None else layer_names)
    frozen = set()
    for layer in frozen_layers:
        if isinstance(layer, str):
            frozen.add(layer)
        elif 1 <= int(layer) <= len(order):
            frozen.add(order[int(layer) - 1])
        else:
            raise InputError(f"frozen layer {layer} is not a position 1..{len(order)} in {order}")
    keep = trainable_predicate(trainable)

    def predicate(name: str) -> bool:
        return keep(name) and layer_of(name) not in frozen

    predicate.__name__ = f"freeze_{'_'.join(sorted(frozen)) or 'none'}"
    return predicate


def first_trainable_layer(model: torch.nn.Module, trainable_names: Iterable[str]) -> int:
    """Index in ``model.layer_names`` of the lowest layer with a trainable parameter (len if none)."""
    layer_names = list(getattr(model, "layer_names", []))
    layers = {n.split(".", 1)[0] for n in trainable_names}
    for i, layer in enumerate(layer_names):
        if layer in layers:
            return i
    return len(layer_names)


def _check_episode(support_x: torch.Tensor, support_y: torch.Tensor) -> None:
    if support_x.dim() == 5 or support_x.dim() < 2:
        raise InputError(f"support_x must be one episode (n, C, H, W) (or (n, n_features) for a model on "
                         f"vectors); got shape {tuple(support_x.shape)}")
    if support_y.dim() != 1 or support_y.shape[0] != support_x.shape[0]:
        raise InputError(f"support_y must be (n,) with n = {support_x.shape[0]}; got {tuple(support_y.shape)}")
    if support_y.dtype != torch.int64:
        raise InputError(f"support_y must be int64 class indices; got {support_y.dtype}")


def adapt(model: torch.nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
          support_y: torch.Tensor, steps: int, lr: float, trainable: Trainable = None,
          first_order: bool = False, inner_loss: str = "mean") -> Params:
    """Adapt ``params`` to one episode with ``steps`` gradient steps of size ``lr`` on the support loss.

    Args:
        model: a module called as ``functional_call(model, params, (x,), {"start": i, "stop": j})``
            (:class:`repana.models.Conv4`); models without ``layer_names`` are run whole every step.
        params: name -> tensor, e.g. ``dict(model.named_parameters())`` (not modified).
        support_x: float ``(n_support, C, H, W)``; support_y: int64 ``(n_support,)`` in ``[0, ways)``.
        steps: inner steps (0 returns a copy of ``params``). lr: step size (in the convention of
            ``inner_loss``).
        trainable: which parameters adapt (see :func:`resolve_trainable`); the rest stay the same tensors.
        first_order: drop second-order terms (FOMAML, evaluation).
        inner_loss: "mean" or "sum_over_shots" (converted into the lr by :func:`mean_loss_lr`).

    Returns:
        A new dict with the same keys; adapted tensors for trainable names, the given ones otherwise.
    """
    if steps < 0:
        raise InputError(f"steps = {steps} must not be negative")
    _check_episode(support_x, support_y)
    lr = mean_loss_lr(lr, inner_loss, support_y)
    current: Params = dict(params)
    names = resolve_trainable(current, trainable)
    if steps == 0 or not names:
        return current

    has_layers = hasattr(model, "layer_names")
    start = first_trainable_layer(model, names) if has_layers else 0
    with torch.enable_grad():
        if start > 0:  # frozen bottom layers: their output never changes, run them once
            inputs = functional_call(model, current, (support_x,), {"stop": start})
            if first_order:
                inputs = inputs.detach()
        else:
            inputs = support_x
        kwargs = {"start": start} if has_layers else {}
        if not first_order:
            for name in names:  # second order needs a graph from every adapted tensor
                if not current[name].requires_grad:
                    current[name] = current[name].detach().requires_grad_(True)
        for _ in range(steps):
            if first_order:
                leaves = {name: current[name].detach().requires_grad_(True) for name in names}
                logits = functional_call(model, {**current, **leaves}, (inputs,), kwargs)
                loss = F.cross_entropy(logits, support_y)
                grads = torch.autograd.grad(loss, [leaves[n] for n in names])
                grads = [g.detach() for g in grads]
            else:
                logits = functional_call(model, current, (inputs,), kwargs)
                loss = F.cross_entropy(logits, support_y)
                grads = torch.autograd.grad(loss, [current[n] for n in names], create_graph=True)
            current = {**current, **{n: current[n] - lr * g for n, g in zip(names, grads)}}
    return current
