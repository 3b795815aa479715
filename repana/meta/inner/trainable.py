"""Which parameters adapt in the inner loop: the ``trainable`` argument in all its forms, resolved to
parameter names or turned into a predicate, and the layer-freezing narrowing of the paper's freezing table."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from repana.errors import InputError
from repana.models import LAYER_NAMES, is_batch_norm_parameter, is_head_parameter, layer_of

Trainable = None | str | Callable[[str], bool] | Iterable[str]


def resolve_trainable(names: Iterable[str], trainable: Trainable) -> list[str]:
    """The parameter names (in ``names`` order) that adapt.

    ``trainable``: ``None`` or ``"all"`` (every parameter), ``"head"``, ``"body"``, a predicate
    ``name -> bool``, or a collection of parameter names and/or layer names (``"conv4"`` selects every
    ``conv4.*`` parameter). An empty collection freezes everything (no adaptation).
    """
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
    return is_head_parameter(name)


def body_parameters(name: str) -> bool:
    """Every parameter but the head's adapts (BOIL, arXiv 2008.08882: the head is frozen in the inner loop)."""
    return not is_head_parameter(name)


def without_batch_norm(trainable: Trainable) -> Callable[[str], bool]:
    """``trainable`` minus the batch-norm affine parameters, as a predicate (Finn et al.'s convention,
    github.com/cbfinn/maml utils.py ``normalize``: batch norm is not in the weights the inner loop updates,
    so it is learned by the outer loop only). See :func:`repana.models.is_batch_norm_parameter`."""
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
