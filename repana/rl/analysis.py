"""The policy's layer similarity before vs after adaptation, on the states of post-adaptation rollouts.

For each held-out task the policy adapts (one inner step), rolls out, and its hidden layers are read
twice on those states: with the meta-learned parameters and with the adapted ones. SVCCA and CKA
compare the two. Plain mean CCA over all 100 units is misleading here: the input is 2-D (17-D for
HalfCheetah), so layer1's pre-activations span 2 directions and its ReLU outputs a low-dimensional
manifold; most of the 100 canonical directions are near-null (dead or collinear units) and their
coefficients are numerical noise or dropped, so the mean says more about the rank cut-off than about
the representation. SVCCA keeps the directions holding 99% of the variance first; CKA weighs
directions by their variance.

The registered analyses built on it (``repana analyze rl_policy_similarity`` / ``rl_returns``) are
:mod:`repana.analysis.rl_policy_similarity` and :mod:`repana.analysis.rl_returns`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from repana.compare import Comparison
from repana.meta.checkpoint import as_checkpoint
from repana.rl.evaluate import EVAL_SEED, adapted_rollouts
from repana.rl.tasks import draw_tasks


def policy_similarity(checkpoint, n_tasks: int = 5, measures=("svcca", "cka"), seed: int = EVAL_SEED,
                      max_datapoints: int = 2000) -> pd.DataFrame:
    """Tidy DataFrame, one row per (task, layer, measure): ``task, layer, measure, value,
    n_datapoints, n_features, algorithm, env, adapt_log_std``. ``checkpoint``: a path or a loaded
    RL :class:`repana.meta.checkpoint.Checkpoint`. Layers: ``layer1``, ``layer2`` (hidden, post-ReLU) and ``mu`` (action mean)."""
    checkpoint = as_checkpoint(checkpoint, kind="rl")
    policy, config = checkpoint.model(), checkpoint.train_config()
    tasks = draw_tasks(config.env, n_tasks, np.random.default_rng(seed))
    generator = torch.Generator().manual_seed(seed)
    _, adapted, after = adapted_rollouts(policy, config, tasks, generator)
    rng = np.random.default_rng(seed)
    comparison = Comparison(measures=measures, errors="note")
    rows = []
    with torch.no_grad():
        for t in range(n_tasks):
            states = after.observations[t][after.mask[t] > 0]
            if len(states) > max_datapoints:
                states = states[torch.from_numpy(rng.choice(len(states), max_datapoints, replace=False))]
            task_params = {n: p[t] for n, p in adapted.items()}  # every adapted tensor is (n_tasks, ...)
            before_acts = policy.hidden(states)
            after_acts = policy.hidden(states, task_params)
            before_acts["mu"] = policy(states)[0]
            after_acts["mu"] = policy(states, task_params)[0]
            for layer in before_acts:
                # a measure that refuses a task's states (too few distinct ones for CCA's directions) gives NaN
                # with its reason in the report, not a failed analysis
                frame = comparison.activations({layer: before_acts[layer].double()},
                                               {layer: after_acts[layer].double()})
                for _, row in frame.iterrows():
                    rows.append({"task": t, "layer": layer, "measure": row["measure"], "value": row["value"],
                                 "n_datapoints": int(row["n_datapoints"]),
                                 "n_features": int(row["n_features_a"])})
    out = pd.DataFrame(rows)
    out["algorithm"], out["env"], out["adapt_log_std"] = config.algorithm, config.env, config.adapt_log_std
    return out
