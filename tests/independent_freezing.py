"""An independent check of the layer-freezing protocol, written with plain PyTorch modules and an optimizer.

It shares nothing with repana's inner loop (no functional call, no fast path, no learning-rate convention
helper): each episode deep-copies the network, hands the parameters of the blocks that are not frozen to
``torch.optim.SGD``, takes ``steps`` steps on the mean support cross-entropy, then classifies the queries.
Batch norm uses each batch's own statistics (``bn_stats="batch"``, as the support and the query are
normalised apart in MAML's code).

    python -m tests.independent_freezing RUN/checkpoints/latest.pt --episodes 200 --steps 3 10 30
prints, per frozen set and step count, this check's accuracy beside :func:`repana.analysis.freezing.freezing_accuracy`'s
and whether they agree within the episode 95% CI.
"""

from __future__ import annotations

import argparse
import copy
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def independent_freezing_accuracy(model: torch.nn.Module, episodes, *, frozen: Sequence[int], steps: int, lr: float,
                                  head_only: bool = False, batch_norm: bool = True) -> np.ndarray:
    """Per-episode query accuracy (float64, ``(n_episodes,)``) after ``steps`` SGD steps of ``lr`` (mean loss)
    on every parameter outside conv blocks ``frozen`` (``head_only``: the head alone, as ANIL; ``batch_norm``
    False: batch norm's scale and shift stay fixed, as Finn et al.'s code keeps them out of the inner loop)."""
    frozen_prefixes = tuple(f"conv{block}." for block in frozen)
    accuracies = []
    for index in range(len(episodes)):
        task = episodes[index]
        network = copy.deepcopy(model).eval()
        adapted = [parameter for name, parameter in network.named_parameters()
                   if not name.startswith(frozen_prefixes) and (not head_only or name.startswith("head."))
                   and (batch_norm or ".bn." not in name)]
        for parameter in network.parameters():
            parameter.requires_grad_(False)
        for parameter in adapted:
            parameter.requires_grad_(True)
        optimizer = torch.optim.SGD(adapted, lr=lr) if adapted else None
        for _ in range(steps if adapted else 0):
            optimizer.zero_grad()
            F.cross_entropy(network(task.support_x), task.support_y).backward()
            optimizer.step()
        with torch.no_grad():
            predicted = network(task.query_x).argmax(-1)
        accuracies.append(float((predicted == task.query_y).double().mean()))
    return np.asarray(accuracies, dtype=np.float64)


def main(argv: list[str] | None = None) -> int:
    from repana.analysis.freezing import FROZEN_SETS, frozen_name, freezing_accuracy
    from repana.data import fixed_episodes, load_splits
    from repana.meta.checkpoint import load_checkpoint
    from repana.meta.train import eval_trainable
    from repana.meta.evaluate import confidence_interval95

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--steps", type=int, nargs="+", default=None)
    parser.add_argument("--seed", type=int, default=12346)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    checkpoint = load_checkpoint(args.checkpoint)
    config = checkpoint.train_config()
    model = checkpoint.model()
    splits = load_splits(config.dataset, root=config.data_root or None)
    episodes = fixed_episodes(splits["test"], n_episodes=args.episodes, ways=config.ways, shots=config.shots,
                              queries=15, seed=args.seed).chunks(args.episodes).__next__()
    lr = config.mean_loss_inner_lr()
    head_only = checkpoint.algorithm == "anil"
    print(f"{args.checkpoint}: {checkpoint.algorithm}, lr {lr:g} (mean loss), {args.episodes} episodes, batch norm "
          f"{'adapting' if config.bn_inner_loop else 'fixed'} in the inner loop")
    print("steps  frozen    independent   repana        |diff|  CI     agree")
    for steps in args.steps or [config.inner_steps_test]:
        ours = freezing_accuracy(model, episodes, steps=steps, lr=lr, trainable=eval_trainable(config))
        for frozen, (_, row) in zip(FROZEN_SETS, ours.iterrows()):
            check = independent_freezing_accuracy(model, episodes, frozen=frozen, steps=steps, lr=lr, head_only=head_only,
                                                  batch_norm=config.bn_inner_loop)
            ci = max(confidence_interval95(check), row["ci95"])
            diff = abs(check.mean() - row["accuracy"])
            print(f"{steps:5d}  {frozen_name(frozen):8s}  {100 * check.mean():6.2f}%      {100 * row['accuracy']:6.2f}%"
                  f"       {100 * diff:5.2f}  {100 * ci:5.2f}  {'yes' if diff <= ci else 'NO'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
