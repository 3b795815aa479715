"""Upper limits on the sizes a command or config may ask for, so that a typo (an extra zero, a stray
exponent) is one clear line at once instead of a process that fills the memory or runs for months
printing nothing. Each limit is far above every setting of the paper (Raghu et al., "Rapid Learning
or Feature Reuse?", ICLR 2020, https://arxiv.org/abs/1909.09157, Appendix A; MAML, Finn et al. 2017,
https://arxiv.org/abs/1703.03400, Section 5.2) and below what a machine can finish; the reason for
each number stands beside it. Light to import (no torch): the CLI checks arguments before any work.
"""

from __future__ import annotations

import math

from repana.errors import InputError

# Meta-iterations of one training run. The paper's longest runs are 60,000 meta-iterations
# (MiniImageNet / Omniglot MAML, Appendix A); 1,000,000 is 16x that, already days of GPU time.
MAX_ITERATIONS = 1_000_000

# Inner-loop steps of one adaptation (training or test). The paper adapts with 1-10 steps (Omniglot
# 3 at test, MiniImageNet 10); a step costs a forward and a backward per task, so 1,000 steps is
# 100x the paper's and minutes per episode on a CPU.
MAX_INNER_STEPS = 1_000

# Evaluation episodes (evaluate --episodes, test_episodes, val_episodes, analysis episodes). The
# paper reports 600 test episodes (MAML's protocol); 100,000 narrows a 95% CI by 13x over 600 and
# keeps the per-episode results (8 bytes each) and the episode seeds small.
MAX_EPISODES = 100_000

# Inner learning rate, mean-loss convention (the step on the support loss averaged over the examples).
# The largest in the paper's settings is MAML's 20-way Omniglot: 0.1 on a loss summed over the 20
# classes, 2.0 on the mean loss; 100 is 50x that. Larger steps make a Conv4's logits overflow
# float32 within a step or two; smaller ones that still diverge are caught as non-finite logits.
MAX_INNER_LR = 100.0

# Training seeds per network of `repana reproduce`. The paper trains 3 seeds; each seed is a whole
# set of training runs (networks x settings), so 100 seeds is already thousands of runs.
MAX_SEEDS = 100

# Query images per class of an episode (analysis --queries, queries_train, queries_test). Omniglot has
# 20 images per character, MiniImageNet 600 per class; 600 covers any class of either dataset.
MAX_QUERIES = 600


def check_count(value: int, flag: str, limit: int, minimum: int = 1, what: str = "") -> int:
    """``value`` when ``minimum <= value <= limit``, else an :class:`InputError` naming ``flag`` and
    the limit (``what``: the reason, e.g. "16x the paper's longest run"). ``flag``: "--episodes"
    or "test_episodes =" as the user wrote it."""
    if value < minimum:
        raise InputError(f"{flag} {value} must be at least {minimum}")
    if value > limit:
        reason = f" ({what})" if what else ""
        raise InputError(f"{flag} {value} is above the limit of {limit:,}{reason}; see repana/limits.py")
    return value


def check_inner_lr(lr: float, steps: int | None = None, name: str = "inner lr") -> float:
    """``lr`` when it is a finite number in ``[0, MAX_INNER_LR]``, else an :class:`InputError` naming it
    as ``name`` (e.g. "--lr"), with ``steps`` when given."""
    with_steps = "" if steps is None else f" (with {steps} inner step{'' if steps == 1 else 's'})"
    try:
        lr = float(lr)
    except (TypeError, ValueError):
        raise InputError(f"{name} {lr!r}{with_steps} is not a number") from None
    if not math.isfinite(lr):
        raise InputError(f"{name} {lr}{with_steps} is not a finite number")
    if lr < 0:
        raise InputError(f"{name} {lr:g}{with_steps} must not be negative")
    if lr > MAX_INNER_LR:
        raise InputError(f"{name} {lr:g}{with_steps} is above the limit of {MAX_INNER_LR:g} (50x the "
                         "largest of the paper's settings, 2.0 on the mean loss); see repana/limits.py")
    return lr


def check_command_options(episodes: int | None = None, steps: int | None = None, lr: float | None = None,
                          queries: int | None = None) -> None:
    """The ``--episodes``, ``--steps``, ``--lr`` and ``--queries`` of evaluate, predict and analyze, checked
    before any work (None: not given, the checkpoint's value applies)."""
    if episodes is not None:
        check_count(episodes, "--episodes", MAX_EPISODES, what="166x the paper's 600 test episodes")
    if steps is not None:
        check_count(steps, "--steps", MAX_INNER_STEPS, minimum=0, what="100x the paper's 10 test steps")
    if lr is not None:
        check_inner_lr(lr, steps, "--lr")
    if queries is not None:
        check_count(queries, "--queries", MAX_QUERIES, what="the images of a MiniImageNet class")
