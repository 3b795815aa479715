"""Few-shot evaluation: accuracy over a fixed set of test episodes with a 95% confidence interval.

Conventions (each changes the numbers; all are stated in docs/meta.md):

* **Batch norm**: each episode's support and query batches are normalised apart (their own batch
  statistics), as in MAML's code; ``bn_support_query="together"`` normalises the query jointly with
  the support (one forward of their concatenation); the inner loop always sees the support alone.
  The model is put in ``eval()`` mode while evaluating (matters only for ``bn_stats="running"``).
* **Adaptation** (``method="adapt"``): ``steps`` first-order gradient steps of size ``lr`` on the
  support loss of the ``trainable`` parameters (all by default; ``{"conv4", "head"}`` freezes
  conv1..conv3 — the layer-freezing ablation; an empty set means no adaptation). A non-finite lr, one
  above :data:`repana.limits.MAX_INNER_LR` or more than :data:`repana.limits.MAX_INNER_STEPS` steps are
  refused before any episode; an inner loop that diverges (non-finite logits) raises InputError naming
  lr and steps (:mod:`repana.meta.inner`).
* **NIL** (``method="nil"``): the head is dropped; see :mod:`repana.meta.nil`.
* **Confidence interval**: ``ci95 = 1.96 * std(per_episode) / sqrt(n_episodes)`` with the population
  std (``ddof=0``, as numpy's default in the MAML/ANIL evaluation code), over *episodes* — not a std
  over training seeds.
* **Head size**: ``head="auto"`` keeps the trained head when it has as many outputs as the episode
  has ways and otherwise starts from a zero head of the right size (multiclass-trained models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple

import numpy as np
import torch

from repana.errors import InputError
from repana.limits import MAX_INNER_STEPS, check_count, check_inner_lr
from repana.meta.inner import InnerLoop, Trainable, normalise_inner_loss, query_logits_by_part, task_features
from repana.meta.nil import nil_logits, nil_predict
from repana.progress import progress

__all__ = ["EvaluationResult", "evaluate", "predict", "support_loss", "confidence_interval95", "nil_logits"]

METHODS = ("adapt", "nil")
HEAD_MODES = ("auto", "keep", "zero")


@dataclass(frozen=True)
class EvaluationResult:
    """Accuracy in [0, 1] averaged over episodes, its 95% CI half-width, and the per-episode values."""

    accuracy: float
    ci95: float
    per_episode: np.ndarray     # float64 (n_episodes,), each episode's query accuracy in [0, 1]
    n_episodes: int

    def __str__(self) -> str:
        return f"{100 * self.accuracy:.2f}% ± {100 * self.ci95:.2f} ({self.n_episodes} episodes)"


def confidence_interval95(per_episode: np.ndarray) -> float:
    """Half-width ``1.96 * std / sqrt(n)`` (population std, ddof=0, as numpy's default in the MAML/ANIL
    evaluation code) of ``per_episode (n,)``: the one definition of the 95% CI in repana (evaluation,
    analyses, reports). One episode gives NaN (no spread to measure).
    """
    values = np.asarray(per_episode, dtype=np.float64)
    if values.size == 0:
        raise InputError("no episodes to compute a confidence interval over")
    if values.size == 1:
        return float("nan")
    return float(1.96 * values.std() / np.sqrt(values.size))


class _Chunk(NamedTuple):
    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor


def _as_chunk(obj: Any) -> _Chunk:
    try:
        chunk = _Chunk(obj.support_x, obj.support_y, obj.query_x, obj.query_y)
    except AttributeError:
        raise InputError(f"episodes must have .support_x, .support_y, .query_x, .query_y; got "
                         f"{type(obj).__name__}") from None
    if chunk.support_x.dim() == 4:  # a single episode
        chunk = _Chunk(*(t.unsqueeze(0) for t in chunk))
    if chunk.support_x.dim() != 5 or chunk.query_x.dim() != 5:
        raise InputError(f"support_x/query_x must be (tasks, n, C, H, W); got {tuple(chunk.support_x.shape)}")
    if chunk.support_y.shape != chunk.support_x.shape[:2] or chunk.query_y.shape != chunk.query_x.shape[:2]:
        raise InputError(f"labels {tuple(chunk.support_y.shape)}, {tuple(chunk.query_y.shape)} do not match "
                         f"the images {tuple(chunk.support_x.shape[:2])}, {tuple(chunk.query_x.shape[:2])}")
    return chunk


def iter_chunks(episodes: Any, chunk_size: int | None = None) -> Iterator[_Chunk]:
    """Chunks of at most ``chunk_size`` tasks from an Episodes-like object, an object with
    ``.chunks(n)`` (e.g. :class:`repana.data.FixedEpisodes`, materialised chunk by chunk), or an
    iterable of Episodes-like objects."""
    if hasattr(episodes, "support_x"):
        sources = [episodes]
    elif hasattr(episodes, "chunks") and hasattr(episodes, "__len__"):
        sources = episodes.chunks(int(chunk_size) if chunk_size else max(1, len(episodes)))
    else:
        sources = episodes
    for source in sources:
        chunk = _as_chunk(source)
        tasks = chunk.support_x.shape[0]
        step = tasks if not chunk_size else int(chunk_size)
        for start in range(0, tasks, step):
            yield _Chunk(*(t[start:start + step] for t in chunk))


def _initial_params(model: torch.nn.Module, ways: int, head: str) -> dict[str, torch.Tensor]:
    params = {n: p.detach() for n, p in model.named_parameters()}
    if head not in HEAD_MODES:
        raise InputError(f"head = {head!r} is not one of {HEAD_MODES}")
    weight = params.get("head.weight")
    if weight is None:
        return params
    if head == "zero" or (head == "auto" and weight.shape[0] != ways):
        params["head.weight"] = torch.zeros(ways, weight.shape[1], dtype=weight.dtype, device=weight.device)
        params["head.bias"] = torch.zeros(ways, dtype=weight.dtype, device=weight.device)
    elif weight.shape[0] != ways:
        raise InputError(f"the head has {weight.shape[0]} outputs but the episodes have {ways} ways: pass "
                         "head='zero' (or 'auto') to adapt a fresh zero head")
    return params


def _chunk_predictions(model, chunk: _Chunk, method: str, steps: int, lr: float, trainable: Trainable,
                       first_order: bool, inner_loss: str, bn_support_query: str, head: str,
                       fold: bool | None = None) -> torch.Tensor:
    """Predicted query labels ``(tasks, n_query)`` int64 for one chunk."""
    ways = int(chunk.support_y.max()) + 1
    together = bn_support_query == "together"
    params = _initial_params(model, ways, head)
    if method == "nil":
        with torch.no_grad():
            # the model is in eval() here, so the per-task batched body forward is exact for any bn_stats
            fs, fq = task_features(model, params, chunk.support_x, chunk.query_x, together)
            return nil_predict(fs, chunk.support_y, fq, ways)
    spec = InnerLoop(steps, lr, trainable, first_order, inner_loss, bn_support_query, fold)
    with torch.no_grad():  # no meta-gradient at test time: the dispatcher takes its no-graph paths
        return torch.cat([logits.argmax(-1) for _, logits in query_logits_by_part(
            model, params, chunk.support_x, chunk.support_y, chunk.query_x, spec)])


class _EvalMode:
    """Puts the model in eval() for the duration and restores its previous mode."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def _check_options(method: str, steps: int, lr: float, inner_loss: str, bn_support_query: str) -> str:
    if method not in METHODS:
        raise InputError(f"method = {method!r} is not one of {METHODS}")
    if steps < 0:
        raise InputError(f"steps = {steps} must not be negative")
    if method == "adapt":
        check_count(steps, "inner steps", MAX_INNER_STEPS, minimum=0, what="100x the paper's 10 test steps")
        check_inner_lr(lr, steps)
        if steps > 0 and lr <= 0:
            raise InputError(f"lr = {lr} must be positive")
    if bn_support_query not in ("apart", "together"):
        raise InputError(f"bn_support_query = {bn_support_query!r} is not 'apart' or 'together'")
    return normalise_inner_loss(inner_loss)


def evaluate(model: torch.nn.Module, episodes: Any, method: str = "adapt", steps: int = 10, lr: float = 0.4,
             trainable: Trainable = None, first_order: bool = True, chunk_size: int | None = 100,
             inner_loss: str = "mean", bn_support_query: str = "apart", head: str = "auto",
             show_progress: bool | None = None, fold: bool | None = None) -> EvaluationResult:
    """Query accuracy of ``model`` over ``episodes`` after adapting on each episode's support set.

    Args:
        model: a :class:`repana.models.Conv4` (not modified).
        episodes: an Episodes-like object (``.support_x (tasks, n_s, C, H, W)`` float, ``.support_y
            (tasks, n_s)`` int64, ``.query_x``, ``.query_y``), a ``FixedEpisodes`` (anything with
            ``.chunks(n)``), or an iterable of Episodes-like chunks.
        method: "adapt" (gradient steps, then the adapted network's predictions) or "nil".
        steps, lr: test-time inner steps and step size (lr in the convention of ``inner_loss``).
        trainable: parameters adapted at test time (see :func:`repana.meta.inner.resolve_trainable`).
        first_order: test-time steps need no second-order terms (the result is the same either way).
        chunk_size: tasks processed together (bounds memory); None = each given chunk whole.
        head: "auto" | "keep" | "zero" (see module doc).
        fold: adapt the tasks of a chunk together, folded into channels (None: whenever the model allows
            it, a Conv4 with batch statistics, on CUDA, and on CPU when it pays there (small support maps,
            :func:`repana.meta.inner.folded.cpu_fold_pays`), in groups bounded by
            :func:`repana.meta.inner.folded.fold_group_size`; False: one task at a time).

    Returns:
        :class:`EvaluationResult`; ``per_episode`` in the order of the episodes.
    """
    inner_loss = _check_options(method, steps, lr, inner_loss, bn_support_query)
    device = next(model.parameters()).device
    accuracies: list[np.ndarray] = []
    with _EvalMode(model):
        for chunk in progress(iter_chunks(episodes, chunk_size), desc=f"evaluate ({method})", unit="chunk",
                              enabled=show_progress):
            chunk = _Chunk(*(t.to(device) for t in chunk))
            predicted = _chunk_predictions(model, chunk, method, steps, lr, trainable, first_order,
                                           inner_loss, bn_support_query, head, fold)
            accuracies.append((predicted == chunk.query_y).double().mean(1).cpu().numpy())
    if not accuracies:
        raise InputError("no episodes to evaluate")
    per_episode = np.concatenate(accuracies)
    return EvaluationResult(accuracy=float(per_episode.mean()), ci95=confidence_interval95(per_episode),
                            per_episode=per_episode, n_episodes=int(per_episode.size))


def support_loss(model: torch.nn.Module, episodes: Any, steps: int, lr: float, trainable: Trainable = None,
                 chunk_size: int | None = 100, inner_loss: str = "mean", head: str = "auto",
                 fold: bool | None = None) -> np.ndarray:
    """Cross-entropy (nats) of each episode's support set after adapting on it: float64 ``(n_episodes,)``.

    The same adaptation as :func:`evaluate` (``steps`` steps of ``lr`` on the ``trainable`` parameters,
    first order), then the adapted network's forward pass on the support images alone (batch statistics of
    the support batch, as the inner loop sees it). What a test-time protocol reads to tell whether its steps
    fitted the support set (:func:`repana.analysis.freezing.converged_steps`).
    """
    inner_loss = _check_options("adapt", steps, lr, inner_loss, "apart")
    device = next(model.parameters()).device
    losses: list[np.ndarray] = []
    with _EvalMode(model):
        for chunk in iter_chunks(episodes, chunk_size):
            chunk = _Chunk(*(t.to(device) for t in chunk))
            ways = int(chunk.support_y.max()) + 1
            spec = InnerLoop(steps, lr, trainable, True, inner_loss, "apart", fold)
            with torch.no_grad():
                logits = torch.cat([part for _, part in query_logits_by_part(
                    model, _initial_params(model, ways, head), chunk.support_x, chunk.support_y, chunk.support_x,
                    spec)])
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).double(), chunk.support_y.flatten(),
                                                         reduction="none").view(chunk.support_y.shape).mean(1)
            losses.append(loss.cpu().numpy())
    if not losses:
        raise InputError("no episodes to evaluate")
    return np.concatenate(losses)


def predict(model: torch.nn.Module, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
            method: str = "adapt", steps: int = 10, lr: float = 0.4, trainable: Trainable = None,
            first_order: bool = True, inner_loss: str = "mean", bn_support_query: str = "apart",
            head: str = "auto") -> torch.Tensor:
    """Predicted labels int64 ``(n_query,)`` for one episode: ``support_x (n_s, C, H, W)`` float,
    ``support_y (n_s,)`` int64 in ``[0, ways)``, ``query_x (n_q, C, H, W)``. Options as :func:`evaluate`."""
    inner_loss = _check_options(method, steps, lr, inner_loss, bn_support_query)
    if support_x.dim() != 4 or query_x.dim() != 4:
        raise InputError(f"support_x and query_x must be (n, C, H, W); got {tuple(support_x.shape)}, "
                         f"{tuple(query_x.shape)}")
    if support_y.shape != support_x.shape[:1]:
        raise InputError(f"support_y must be ({support_x.shape[0]},); got {tuple(support_y.shape)}")
    device = next(model.parameters()).device
    dummy_query_y = torch.zeros(query_x.shape[0], dtype=torch.int64, device=device)
    chunk = _Chunk(support_x.unsqueeze(0).to(device), support_y.unsqueeze(0).to(device),
                   query_x.unsqueeze(0).to(device), dummy_query_y.unsqueeze(0))
    with _EvalMode(model):
        return _chunk_predictions(model, chunk, method, steps, lr, trainable, first_order, inner_loss,
                                  bn_support_query, head)[0].cpu()
