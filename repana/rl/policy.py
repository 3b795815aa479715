"""Gaussian MLP policy (two hidden layers of 100 ReLU units, learned state-independent log-std).

The forward pass is functional: ``forward(observations, params)`` takes a dict of parameters, either
the shared ones (``weight (out, in)``) or one set per task with a leading task dimension
(``weight (n_tasks, out, in)``, observations ``(n_tasks, ..., in)``), so the inner loop adapts every
task of a meta-batch in one batched pass. Parameter names: ``layer1.*``, ``layer2.*`` (the body),
``mu.*`` (the head) and ``log_std`` (action_size,).
"""

from __future__ import annotations

import math

import torch
from torch import nn

BODY_PREFIXES = ("layer",)
HEAD_NAMES = ("mu.weight", "mu.bias")
LOG_STD = "log_std"


class GaussianMLPPolicy(nn.Module):
    """``observation_size -> hidden_sizes (ReLU) -> action mean``; std = exp(log_std)."""

    def __init__(self, observation_size: int, action_size: int, hidden_sizes=(100, 100),
                 init_std: float = 1.0):
        super().__init__()
        self.config = {"observation_size": int(observation_size), "action_size": int(action_size),
                       "hidden_sizes": [int(h) for h in hidden_sizes], "init_std": float(init_std)}
        sizes = [observation_size, *hidden_sizes]
        self.hidden_names = [f"layer{i}" for i in range(1, len(sizes))]
        for name, (n_in, n_out) in zip(self.hidden_names, zip(sizes[:-1], sizes[1:])):
            self.add_module(name, nn.Linear(n_in, n_out))
        self.mu = nn.Linear(sizes[-1], action_size)
        self.log_std = nn.Parameter(torch.full((action_size,), math.log(init_std)))
        for module in self.modules():  # Xavier weights and zero biases, as in the reference code
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def params(self) -> dict[str, torch.Tensor]:
        return dict(self.named_parameters())

    def hidden(self, observations: torch.Tensor, params: dict | None = None) -> dict[str, torch.Tensor]:
        """Post-ReLU activations of every hidden layer, ``{name: (..., width)}``."""
        params = self.params() if params is None else params
        out, acts = observations, {}
        for name in self.hidden_names:
            out = torch.relu(linear(out, params[f"{name}.weight"], params[f"{name}.bias"]))
            acts[name] = out
        return acts

    def forward(self, observations: torch.Tensor, params: dict | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean (..., action_size), log_std broadcastable to mean)``."""
        params = self.params() if params is None else params
        out = observations
        for name in self.hidden_names:
            out = torch.relu(linear(out, params[f"{name}.weight"], params[f"{name}.bias"]))
        mean = linear(out, params["mu.weight"], params["mu.bias"])
        log_std = params[LOG_STD]
        if log_std.dim() == 2:  # per task: (n_tasks, action_size) -> (n_tasks, 1, ..., action_size)
            log_std = log_std.view(log_std.shape[0], *([1] * (mean.dim() - 2)), log_std.shape[1])
        return mean, log_std


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T + bias``; a 3-D ``weight (n_tasks, out, in)`` applies task t's to ``x[t]``."""
    if weight.dim() == 2:
        return torch.nn.functional.linear(x, weight, bias)
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    out = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    return out.reshape(*x.shape[:-1], weight.shape[1])


def gaussian_log_prob(actions: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Log density of a diagonal Gaussian, summed over the action dimension -> ``actions.shape[:-1]``."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_kl(mean_p, log_std_p, mean_q, log_std_q) -> torch.Tensor:
    """KL(p || q) of diagonal Gaussians, summed over the action dimension."""
    var_p, var_q = torch.exp(2 * log_std_p), torch.exp(2 * log_std_q)
    kl = log_std_q - log_std_p + (var_p + (mean_p - mean_q).pow(2)) / (2 * var_q) - 0.5
    return kl.sum(-1)


def adapted_parameter_names(policy: GaussianMLPPolicy, algorithm: str, adapt_log_std: bool) -> list[str]:
    """The inner loop's parameters: every parameter (maml, fomaml) or the head only (anil);
    ``log_std`` joins them when ``adapt_log_std``."""
    from repana.errors import ConfigError
    if algorithm in ("maml", "fomaml"):
        names = [n for n, _ in policy.named_parameters() if n != LOG_STD]
    elif algorithm == "anil":
        names = list(HEAD_NAMES)
    else:
        raise ConfigError(f"unknown RL algorithm {algorithm!r}; choose maml, fomaml or anil")
    return names + ([LOG_STD] if adapt_log_std else [])
