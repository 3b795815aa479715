"""CKA for activations that do not fit in memory: accumulate over minibatches, many layers at once.

* :class:`StreamingLinearCKA`: exact plain linear CKA from sufficient statistics (per layer the feature sums
  and ``X^T X``; per pair ``X^T Y``), memory ``O(d^2)`` per layer pair whatever the number of datapoints.
  Sums are taken around a shift (the first batch's mean), so a large mean offset loses no precision.
* :class:`MinibatchCKA`: the minibatch estimator of Nguyen, Raghu & Kornblith (2021): the unbiased HSIC
  (Song et al. 2012) of each minibatch, averaged over minibatches, then
  ``CKA = mean HSIC(X, Y) / sqrt(mean HSIC(X, X) mean HSIC(Y, Y))``. It estimates debiased CKA (not
  plain CKA) and does not depend on the batch size in expectation; each minibatch needs >= 4 datapoints.

Both take dicts ``{layer_name: activations (batch, ...)}`` for model A and (optionally) model B; without B
every layer of A is compared with every layer of A. Activations with more than 2 dimensions need a
``reduction`` (see :func:`repana.similarity.reduce_conv`).
"""

from __future__ import annotations

import math
from typing import Mapping

import pandas as pd
import torch

from repana.errors import InputError
from repana.similarity._arrays import as_float64_matrix_and_max_abs
from repana.similarity.cka import unbiased_linear_hsic
from repana.similarity.conv import reduce_conv
from repana.similarity.representation import Representation, _rescaling_exponent, _times_power_of_two

FRAME_COLUMNS = ["layer_a", "layer_b", "measure", "value", "n_datapoints", "n_features_a", "n_features_b",
                 "reduction"]


class _LayerPairAccumulator:
    """Shared bookkeeping: batch validation, layer names, pairs, the tidy frame."""

    measure_name = ""

    def __init__(self, reduction: str | None = None, min_batch: int = 1):
        self.reduction = reduction
        self.min_batch = min_batch
        self.n_datapoints = 0
        self.layers_a: list[str] = []
        self.layers_b: list[str] = []
        self.features: dict[tuple[str, str], int] = {}
        # Per layer, the power of two fixed at its first batch (0 for ordinary magnitudes): values of 1e200
        # would overflow the sums of squares, and CKA does not change when a layer is scaled.
        self._exponents: dict[tuple[str, str], int] = {}
        self._same = None

    def _prepare(self, acts: Mapping, side: str) -> dict[str, torch.Tensor]:
        if not acts:
            raise InputError(f"no activations given for model {side.upper()}")
        batch = {}
        for name, value in acts.items():
            if getattr(value, "ndim", 2) > 2:
                if self.reduction is None:
                    raise InputError(f"layer {name!r} has shape {tuple(value.shape)}: pass reduction="
                                     f"'flatten' | 'positions' | 'mean' to reduce it to 2-D")
                value = reduce_conv(value, self.reduction)
            tensor, largest = as_float64_matrix_and_max_abs(value, f"{side}:{name}", min_datapoints=self.min_batch)
            exponent = self._exponents.setdefault((side, name), _rescaling_exponent(largest))
            batch[name] = _times_power_of_two(tensor, exponent, inplace=False) if exponent else tensor
        sizes = {tensor.shape[0] for tensor in batch.values()}
        if len(sizes) != 1:
            raise InputError(f"layers of model {side.upper()} have different numbers of datapoints in this "
                             f"batch: { {k: v.shape[0] for k, v in batch.items()} }")
        return batch

    def _register(self, batch_a: dict, batch_b: dict | None) -> tuple[dict, dict]:
        same = batch_b is None
        if self._same is None:
            self._same = same
            self.layers_a = list(batch_a)
            self.layers_b = list(batch_a if same else batch_b)
        elif self._same != same:
            raise InputError("pass acts_b on every update or on none")
        batch_b = batch_a if same else batch_b
        if list(batch_a) != self.layers_a or list(batch_b) != self.layers_b:
            raise InputError(f"every update needs the same layers: expected {self.layers_a} / {self.layers_b}")
        for side, batch in (("a", batch_a), ("b", batch_b)):
            for name, tensor in batch.items():
                if self.features.setdefault((side, name), tensor.shape[1]) != tensor.shape[1]:
                    raise InputError(f"layer {name!r} changed width between updates")
        n_a, n_b = next(iter(batch_a.values())).shape[0], next(iter(batch_b.values())).shape[0]
        if n_a != n_b:
            raise InputError(f"this batch has {n_a} datapoints for model A but {n_b} for model B")
        return batch_a, batch_b

    def update(self, acts_a: Mapping, acts_b: Mapping | None = None) -> None:
        """Add one minibatch: ``{layer: (batch, ...)}`` of model A and, optionally, of model B (same inputs)."""
        batch_a = self._prepare(acts_a, "a")
        batch_b = None if acts_b is None else self._prepare(acts_b, "b")
        batch_a, batch_b = self._register(batch_a, batch_b)
        self._accumulate(batch_a, batch_b)
        self.n_datapoints += next(iter(batch_a.values())).shape[0]

    def _accumulate(self, batch_a: dict, batch_b: dict) -> None:
        raise NotImplementedError

    def value(self, layer_a: str, layer_b: str) -> float:
        raise NotImplementedError

    def results(self) -> dict[tuple[str, str], float]:
        """``{(layer_a, layer_b): value}`` for every pair."""
        if self.n_datapoints == 0:
            raise InputError("no data yet: call update() with at least one batch")
        return {(a, b): self.value(a, b) for a in self.layers_a for b in self.layers_b}

    def to_frame(self) -> pd.DataFrame:
        """Tidy DataFrame with the columns of :meth:`repana.compare.Comparison.activations`."""
        rows = [{"layer_a": a, "layer_b": b, "measure": self.measure_name, "value": value,
                 "n_datapoints": self.n_datapoints, "n_features_a": self.features[("a", a)],
                 "n_features_b": self.features[("b", b)], "reduction": self.reduction}
                for (a, b), value in self.results().items()]
        return pd.DataFrame(rows, columns=FRAME_COLUMNS)


class StreamingLinearCKA(_LayerPairAccumulator):
    """Exact plain linear CKA over minibatches; equals :func:`repana.similarity.cka` on the concatenated data.

    Memory: per layer ``d`` sums and a ``(d, d)`` matrix, per pair a ``(d_a, d_b)`` matrix (float64).

    >>> acc = StreamingLinearCKA()
    >>> for acts_a, acts_b in batches:          # dicts {layer: (batch, d)}
    ...     acc.update(acts_a, acts_b)
    >>> acc.to_frame()                          # or acc.value("conv1", "conv1")
    """

    measure_name = "cka"

    def __init__(self, reduction: str | None = None):
        super().__init__(reduction, min_batch=1)
        self._shift: dict = {}
        self._sum: dict = {}
        self._cross: dict = {}

    def _accumulate(self, batch_a: dict, batch_b: dict) -> None:
        side_b = "a" if self._same else "b"
        batches = {("a", name): tensor for name, tensor in batch_a.items()}
        if not self._same:
            batches.update({("b", name): tensor for name, tensor in batch_b.items()})
        shifted = {}
        for key, tensor in batches.items():
            if key not in self._shift:
                self._shift[key] = tensor.mean(dim=0)
            shifted[key] = tensor - self._shift[key]
            self._sum[key] = self._sum.get(key, 0.0) + shifted[key].sum(dim=0)
            self._add((key, key), shifted)
        for a in self.layers_a:
            for b in self.layers_b:
                pair = (("a", a), (side_b, b))
                if pair[0] != pair[1] and (pair[1], pair[0]) not in self._cross:
                    self._add(pair, shifted)

    def _add(self, pair, shifted) -> None:
        self._cross[pair] = self._cross.get(pair, 0.0) + shifted[pair[0]].T @ shifted[pair[1]]

    def _centered_cross(self, key_x, key_y) -> torch.Tensor:
        n = self.n_datapoints
        raw = self._cross[(key_x, key_y)] if (key_x, key_y) in self._cross else self._cross[(key_y, key_x)].T
        return raw - n * torch.outer(self._sum[key_x] / n, self._sum[key_y] / n)

    def value(self, layer_a: str, layer_b: str) -> float:
        """Plain linear CKA between ``layer_a`` of model A and ``layer_b`` of model B, all data so far."""
        key_a, key_b = ("a", layer_a), ("a" if self._same else "b", layer_b)
        cross = self._centered_cross(key_a, key_b)
        self_a = self._centered_cross(key_a, key_a)
        self_b = self._centered_cross(key_b, key_b)
        denominator = math.sqrt(float((self_a * self_a).sum()) * float((self_b * self_b).sum()))
        if not math.isfinite(denominator):
            raise InputError(f"layer {layer_a!r} or {layer_b!r}: sums of squares overflow float64 (a batch far "
                             f"larger in magnitude than the first one); divide the activations by a constant")
        if denominator == 0.0:
            raise InputError(f"layer {layer_a!r} or {layer_b!r} is constant over all datapoints seen")
        return float((cross * cross).sum()) / denominator


class MinibatchCKA(_LayerPairAccumulator):
    """Minibatch CKA of Nguyen et al. (2021): unbiased HSIC per minibatch, averaged; estimates debiased CKA.

    Use equal-size minibatches of at least a few dozen datapoints (each needs >= 4).
    """

    measure_name = "cka_minibatch"

    def __init__(self, reduction: str | None = None):
        super().__init__(reduction, min_batch=4)
        self._hsic: dict = {}
        self.n_batches = 0

    def _accumulate(self, batch_a: dict, batch_b: dict) -> None:
        reps = {("a", name): Representation(t, f"a:{name}", 4) for name, t in batch_a.items()}
        if not self._same:
            reps.update({("b", name): Representation(t, f"b:{name}", 4) for name, t in batch_b.items()})
        for key, rep in reps.items():
            if rep.scale_exponent:
                raise InputError(f"layer {key[1]!r} of model {key[0].upper()}: this batch's magnitude differs from "
                                 f"the first batch's by more than 2**64; minibatch HSIC averages need one scale")
            self._hsic[(key, key)] = self._hsic.get((key, key), 0.0) + unbiased_linear_hsic(rep, rep)
        side_b = "a" if self._same else "b"
        for a in self.layers_a:
            for b in self.layers_b:
                pair = (("a", a), (side_b, b))
                if pair[0] == pair[1]:
                    continue
                self._hsic[pair] = self._hsic.get(pair, 0.0) + unbiased_linear_hsic(reps[pair[0]], reps[pair[1]])
        self.n_batches += 1

    def value(self, layer_a: str, layer_b: str) -> float:
        side_b = "a" if self._same else "b"
        key_a, key_b = ("a", layer_a), (side_b, layer_b)
        cross = self._hsic[(key_a, key_b)]
        self_a, self_b = self._hsic[(key_a, key_a)], self._hsic[(key_b, key_b)]
        if self_a <= 0 or self_b <= 0:
            raise InputError(f"minibatch CKA undefined for {layer_a!r} / {layer_b!r}: mean unbiased HSIC of a "
                             f"layer with itself is <= 0 (batches too small)")
        return cross / math.sqrt(self_a * self_b)
