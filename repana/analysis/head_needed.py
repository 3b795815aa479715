"""Is the head needed at training time? ANIL (trained with a head adapted in the inner loop) against
a network trained with NIL's cosine classifier in the inner loop (no head), both evaluated with NIL
on the same episodes. The paper finds the head matters at training time (MiniImageNet 5-way 1-shot:
ANIL body 48.0 %, NIL-trained 38.3 %).
"""

from __future__ import annotations

import pandas as pd
import torch

from repana.analysis.common import check_same_architecture
from repana.analysis.comparison import EvalSpec, evaluate_specs


def head_needed(anil_model: torch.nn.Module, nil_trained_model: torch.nn.Module, episodes) -> pd.DataFrame:
    """NIL accuracy of an ANIL-trained and a NIL-trained body on the same episodes.

    Returns rows: training ("anil" | "nil"), accuracy (fraction), ci95, n_episodes.
    """
    check_same_architecture(anil_model, nil_trained_model, "the ANIL and NIL-trained networks")
    specs = [EvalSpec("anil", anil_model.eval(), method="nil", trained_with="anil"),
             EvalSpec("nil", nil_trained_model.eval(), method="nil", trained_with="nil")]
    frame = evaluate_specs(specs, episodes).rename(columns={"label": "training"})
    return frame[["training", "accuracy", "ci95", "n_episodes"]]
