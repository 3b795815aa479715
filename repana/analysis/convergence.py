"""Inner-loop geometry and convergence (Ji, Yang, Liang et al., NeurIPS 2020, arXiv 2006.09486).

ANIL meta-trains a body with an inner loop on the head only. Ji et al. analyse two cases: a
strongly-convex inner loss (a linear head with L2 regularisation, ``"linear_l2"``) and a nonconvex one
(a two-layer head, ``"two_layer"``); with N inner steps the strongly-convex case converges with a
cost that grows mildly in N, the nonconvex one needs more care, and ANIL's cost grows far more slowly
in N than MAML's. This module meta-trains ANIL with either head for several N and records the
meta-training loss and test accuracy against iterations and wall-clock time, and measures the cost
of one meta-step of ANIL and MAML as N grows.

The meta-core's ANIL adapts the network's own linear head; the two head variants are implemented
here on top of the network's body (``model.features``), with the inner loop on the head's
parameter dict (gradients through the head only, second order, exact).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from repana.analysis.registry import Analysis, Finding, Section, register
from repana.errors import InputError
from repana.progress import progress

HEADS = ("linear_l2", "two_layer")


def init_head(kind: str, n_features: int, ways: int, hidden: int = 64, seed: int = 0) -> dict:
    """Initial head parameters (PyTorch Linear default init), as a dict of leaf tensors."""
    if kind not in HEADS:
        raise InputError(f"head {kind!r} is not one of {HEADS}")
    generator = torch.Generator().manual_seed(seed)

    def linear(fan_in, fan_out):
        bound = 1.0 / math.sqrt(fan_in)
        weight = (torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound
        bias = (torch.rand(fan_out, generator=generator) * 2 - 1) * bound
        return weight.requires_grad_(True), bias.requires_grad_(True)

    if kind == "linear_l2":
        w, b = linear(n_features, ways)
        return {"w": w, "b": b}
    w1, b1 = linear(n_features, hidden)
    w2, b2 = linear(hidden, ways)
    return {"w1": w1, "b1": b1, "w2": w2, "b2": b2}


def head_logits(kind: str, params: dict, features: torch.Tensor) -> torch.Tensor:
    """Logits ``(n, ways)`` of ``features (n, n_features)`` under head ``kind``."""
    if kind == "linear_l2":
        return features @ params["w"].T + params["b"]
    hidden = F.relu(features @ params["w1"].T + params["b1"])
    return hidden @ params["w2"].T + params["b2"]


def inner_loss(kind: str, params: dict, features: torch.Tensor, labels: torch.Tensor, l2: float) -> torch.Tensor:
    """Support loss: cross-entropy, plus ``l2/2 * ||W||^2`` for the linear head (strongly convex in W)."""
    loss = F.cross_entropy(head_logits(kind, params, features), labels)
    if kind == "linear_l2":
        loss = loss + 0.5 * l2 * (params["w"] ** 2).sum()
    return loss


def adapt_head(kind: str, params: dict, features: torch.Tensor, labels: torch.Tensor, *, steps: int,
               lr: float, l2: float, create_graph: bool) -> dict:
    """``steps`` gradient steps on the head's inner loss; differentiable when ``create_graph``."""
    current = dict(params)
    for _ in range(steps):
        loss = inner_loss(kind, current, features, labels, l2)
        grads = torch.autograd.grad(loss, list(current.values()), create_graph=create_graph)
        current = {k: v - lr * g for (k, v), g in zip(current.items(), grads)}
    return current


def _head_accuracy(model, kind, head, episodes, steps, lr, l2) -> float:
    correct = []
    for index in range(len(episodes)):
        task = episodes[index]
        with torch.no_grad():
            support = model.features(task.support_x)
            query = model.features(task.query_x)
        with torch.enable_grad():
            start = {k: v.detach().requires_grad_(True) for k, v in head.items()}
            adapted = adapt_head(kind, start, support, task.support_y, steps=steps, lr=lr, l2=l2,
                                 create_graph=False)
        with torch.no_grad():
            predictions = head_logits(kind, adapted, query).argmax(dim=1)
        correct.append(float((predictions == task.query_y).float().mean()))
    return float(np.mean(correct))


def meta_train_anil_head(model: torch.nn.Module, kind: str, batches: Callable[[int], object], test_episodes, *,
                         inner_steps: int, iterations: int, inner_lr: float = 0.1, outer_lr: float = 1e-3,
                         l2: float = 0.1, head_hidden: int = 64, eval_every: int = 25,
                         seed: int = 0) -> pd.DataFrame:
    """Meta-train ``model``'s body with ANIL and head ``kind`` for ``iterations`` outer steps.

    ``batches(step)`` -> :class:`repana.data.Episodes` (a meta-batch); ``test_episodes``: fixed
    episodes for accuracy. ``model`` is trained in place. Returns rows: head, inner_steps, iteration,
    metric ("train_loss": query loss after adaptation, averaged over the meta-batch;
    "test_accuracy": fraction), value, elapsed_s (training wall-clock, evaluation excluded).
    """
    if inner_steps < 1 or iterations < 1:
        raise InputError("inner_steps and iterations must be at least 1")
    torch.manual_seed(seed)
    ways = int(test_episodes[0].support_y.max()) + 1
    with torch.no_grad():
        n_features = model.features(test_episodes[0].support_x).shape[1]
    head = init_head(kind, n_features, ways, hidden=head_hidden, seed=seed)
    optimizer = torch.optim.Adam(list(model.parameters()) + list(head.values()), lr=outer_lr)
    rows, elapsed = [], 0.0
    model.train()
    for iteration in progress(range(1, iterations + 1), desc=f"ANIL {kind} N={inner_steps}", unit="step"):
        batch = batches(iteration)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        losses = []
        for index in range(len(batch)):
            task = batch[index]
            support = model.features(task.support_x)
            query = model.features(task.query_x)
            adapted = adapt_head(kind, head, support, task.support_y, steps=inner_steps, lr=inner_lr,
                                 l2=l2, create_graph=True)
            loss = F.cross_entropy(head_logits(kind, adapted, query), task.query_y) / len(batch)
            loss.backward()
            losses.append(float(loss.detach()) * len(batch))
        optimizer.step()
        elapsed += time.perf_counter() - start
        rows.append({"head": kind, "inner_steps": inner_steps, "iteration": iteration,
                     "metric": "train_loss", "value": float(np.mean(losses)), "elapsed_s": elapsed})
        if iteration % eval_every == 0 or iteration == iterations:
            model.eval()
            accuracy = _head_accuracy(model, kind, head, test_episodes, inner_steps, inner_lr, l2)
            model.train()
            rows.append({"head": kind, "inner_steps": inner_steps, "iteration": iteration,
                         "metric": "test_accuracy", "value": accuracy, "elapsed_s": elapsed})
    model.eval()
    return pd.DataFrame.from_records(rows)


def convergence_study(make_model: Callable[[], torch.nn.Module], batches, test_episodes, *,
                      heads: Sequence[str] = HEADS, inner_steps: Sequence[int] = (1, 5, 10),
                      iterations: int = 100, **kwargs) -> pd.DataFrame:
    """:func:`meta_train_anil_head` for every head and N, each from the same fresh network."""
    frames = [meta_train_anil_head(make_model(), kind, batches, test_episodes, inner_steps=n,
                                   iterations=iterations, **kwargs)
              for kind in heads for n in inner_steps]
    return pd.concat(frames, ignore_index=True)


def cost_vs_inner_steps(model: torch.nn.Module, batch, *, inner_steps: Sequence[int] = (1, 5, 10),
                        lr: float = 0.1, repeats: int = 2) -> pd.DataFrame:
    """Seconds per meta-gradient of MAML and ANIL (the meta-core's algorithms) for each N.

    Returns rows: inner_steps, algorithm, seconds, ratio (MAML seconds / ANIL seconds, on ANIL rows).
    """
    from repana.analysis.maml_anil_nil import _meta_step_seconds

    rows = []
    model.train()
    for n in inner_steps:
        seconds = {alg: _meta_step_seconds(model, batch, alg, n, lr, repeats) for alg in ("maml", "anil")}
        for alg in ("maml", "anil"):
            rows.append({"inner_steps": n, "algorithm": alg, "seconds": seconds[alg],
                         "ratio": seconds["maml"] / seconds[alg] if alg == "anil" else 1.0})
    return pd.DataFrame.from_records(rows)


# ----- the registered analysis -------------------------------------------------------------------

NAME = "convergence"


def compute(context) -> dict[str, pd.DataFrame]:
    """Fresh networks of the reference run's architecture, meta-trained on its dataset's train split."""
    from repana.data import EpisodeSampler
    from repana.meta.train import step_seed
    from repana.models import build_model

    settings, base = context.settings, context.reference_config
    train_set = context.splits()["train"]
    episodes = context.episodes(settings["episodes"])

    def batches(step: int):
        return EpisodeSampler(train_set, ways=base.ways, shots=base.shots, queries=base.queries_train,
                              seed=step_seed(base.seed + 1, step)).sample(tasks=settings["meta_batch_size"])

    def make_model():
        torch.manual_seed(base.seed)
        return build_model(base.model_config())

    study = convergence_study(make_model, batches, episodes, inner_steps=settings["inner_steps"],
                              iterations=settings["iterations"], inner_lr=settings["inner_lr"], l2=settings["l2"],
                              head_hidden=settings["head_hidden"], eval_every=settings["eval_every"], seed=base.seed)
    cost = cost_vs_inner_steps(make_model(), batches(1), inner_steps=settings["inner_steps"], lr=context.lr,
                               repeats=settings["cost_repeats"])
    return {NAME: study, f"{NAME}_cost": cost}


def figures(tables, context) -> dict:
    from repana.plots import paper as plots

    return {NAME: lambda: plots.convergence_figure(tables[NAME]),
            f"{NAME}_cost": lambda: plots.cost_figure(tables[f"{NAME}_cost"])}


def report(tables, context) -> Section:
    from repana.analysis.report import figure_markdown, markdown_table, pct

    frame, cost = tables[NAME], tables.get(f"{NAME}_cost")
    rows = []
    for (head, n), group in frame.groupby(["head", "inner_steps"], sort=False):
        loss = group[group["metric"] == "train_loss"]
        acc = group[group["metric"] == "test_accuracy"]
        tail = max(1, len(loss) // 10)
        rows.append({"head": head, "N": n, "final loss (last 10%)": float(loss["value"].iloc[-tail:].mean()),
                     "test accuracy (%)": pct(acc["value"].iloc[-1]) if len(acc) else "n/a",
                     "s / iteration": float(loss["elapsed_s"].iloc[-1] / len(loss))})
    view = pd.DataFrame(rows)
    body = ("ANIL with a strongly-convex inner loss (L2-regularised linear head) vs a nonconvex one (two-layer "
            "head), N inner steps.\n\n" + markdown_table(view) + "\n\n"
            + figure_markdown(NAME, "Meta-training loss vs iterations and wall-clock; test accuracy") + "\n")
    findings = []
    if len(view) and set(view["head"]) >= {"linear_l2", "two_layer"}:
        pairs = view.pivot_table(index="N", columns="head", values="final loss (last 10%)")
        findings.append(Finding(
            "Final meta-training loss, strongly-convex (linear_l2) vs nonconvex (two_layer) inner loop: "
            + "; ".join(f"N={n}: {row['linear_l2']:.3f} vs {row['two_layer']:.3f}" for n, row in pairs.iterrows())
            + " (short runs: read the curves, not only the last values)"))
    if cost is not None and len(cost):
        body += markdown_table(cost) + "\n\n" + figure_markdown(f"{NAME}_cost", "Seconds per meta-step vs N") + "\n"
        ratio = cost[cost["algorithm"] == "anil"].set_index("inner_steps")["ratio"]
        findings.append(Finding(
            "MAML/ANIL cost ratio per meta-step for N = " + ", ".join(f"{n}: {r:.2f}x" for n, r in ratio.items())
            + (" -- grows with N, as Ji et al. predict" if ratio.is_monotonic_increasing else
               " -- does not grow monotonically with N here")))
    return Section("Inner-loop geometry and convergence (Ji et al., NeurIPS 2020)", body, tuple(findings))


# across_seeds: computed once per setting (fresh networks of the reference run's architecture, whatever the seeds)
ANALYSIS = register(Analysis(
    name=NAME, title="Inner-loop geometry and convergence", reference="Ji et al. 2020", networks=("maml",),
    n_checkpoints=(1, 1), compute=compute, figures=figures, report=report, episode_offset=6, across_seeds=True))
