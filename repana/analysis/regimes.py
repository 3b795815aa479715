"""Where the features come from (the paper's training-regimes table) and whether the head is needed
at training time.

Every body is evaluated the same way, with NIL (no inner loop, no head: each query image gets the
class of the support features it is most cosine-similar to), on the same episodes, so differences
come from the body alone. The paper (MiniImageNet 5-way 1-shot) reports MAML 48.4, ANIL 48.0,
multiclass pretraining 39.7, multitask 26.5, NIL training 38.3, random init 32.9 %.
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd
import torch

from repana.analysis.common import check_same_architecture
from repana.analysis.comparison import EvalSpec, evaluate_specs

REGIME_ORDER = ("maml", "anil", "multiclass", "multitask", "nil", "random")
REGIME_NAMES = {"maml": "MAML", "anil": "ANIL", "multiclass": "Multiclass pretrain",
                "multitask": "Multitask", "nil": "NIL training", "random": "Random features"}


def random_init_model(model_config: dict, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised network of ``model_config`` (torch default init, seeded)."""
    from repana.models import build_model

    torch.manual_seed(seed)
    return build_model(dict(model_config)).eval()


def regimes_accuracy(bodies: Mapping[str, torch.nn.Module], episodes) -> pd.DataFrame:
    """NIL accuracy of each body on the same ``episodes``.

    ``bodies``: regime key (see ``REGIME_ORDER``; other keys allowed) -> network. Bodies must share
    the conv architecture (heads may differ in size: multiclass heads are not used by NIL).
    Returns rows: regime, name, accuracy (fraction), ci95, n_episodes.
    """
    items = list(bodies.items())
    for key, model in items[1:]:
        check_same_architecture(items[0][1], model, f"bodies {items[0][0]!r} and {key!r}")
    specs = [EvalSpec(label=key, model=model.eval(), method="nil", trained_with=key) for key, model in items]
    frame = evaluate_specs(specs, episodes).rename(columns={"label": "regime"})
    frame.insert(1, "name", [REGIME_NAMES.get(k, k) for k in frame["regime"]])
    return frame.drop(columns=["trained_with", "method"])
