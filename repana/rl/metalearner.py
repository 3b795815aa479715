"""The meta-learner: an inner policy-gradient step on a set of adapted parameters, TRPO outside.

maml, fomaml and anil differ only in data: which parameters the inner loop adapts
(:func:`repana.rl.policy.adapted_parameter_names`: all of them, or ``mu.*`` for anil, plus ``log_std``
when ``adapt_log_std``) and whether the inner gradient is differentiated (``first_order`` for fomaml).
The outer loop always updates every parameter. All tasks of a meta-batch adapt at once: the shared
parameters are expanded to ``(n_tasks, ...)`` views, so one backward pass gives every task its own
inner gradient while the graph still leads back to the shared parameters.
"""

from __future__ import annotations

import torch

from repana.rl.policy import GaussianMLPPolicy, adapted_parameter_names, gaussian_kl, gaussian_log_prob
from repana.rl.sampler import Episodes
from repana.rl.trpo import trpo_step


def masked_task_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each task's unmasked steps: ``(T, N, H) -> (T,)``."""
    return (values * mask).sum((1, 2)) / mask.sum((1, 2)).clamp_min(1)


class MetaLearner:
    def __init__(self, policy: GaussianMLPPolicy, algorithm: str = "maml", inner_lr: float = 0.1,
                 num_steps: int = 1, adapt_log_std: bool = True):
        self.policy = policy
        self.algorithm = algorithm
        self.adapted_names = adapted_parameter_names(policy, algorithm, adapt_log_std)
        self.first_order = algorithm == "fomaml"
        self.inner_lr, self.num_steps = inner_lr, num_steps

    def inner_loss(self, params: dict, episodes: Episodes) -> torch.Tensor:
        """Per-task REINFORCE losses with baseline-corrected advantages, ``(T,)``."""
        mean, log_std = self.policy(episodes.observations, params)
        log_prob = gaussian_log_prob(episodes.actions, mean, log_std)
        return -masked_task_mean(log_prob * episodes.advantages, episodes.mask)

    def adapt(self, params: dict, episodes: Episodes, first_order: bool | None = None) -> dict:
        """Per-task parameters ``{name: (T, ...)}`` after ``num_steps`` inner steps on ``episodes``."""
        first_order = self.first_order if first_order is None else first_order
        n_tasks = episodes.observations.shape[0]
        current = {n: p.expand(n_tasks, *p.shape) for n, p in params.items()}
        with torch.enable_grad():
            for _ in range(self.num_steps):
                loss = self.inner_loss(current, episodes).sum()
                targets = [current[n] for n in self.adapted_names]
                grads = torch.autograd.grad(loss, targets, create_graph=not first_order)
                current = dict(current)
                for name, grad in zip(self.adapted_names, grads):
                    current[name] = current[name] - self.inner_lr * grad
        return current

    def surrogate(self, params: dict, train: Episodes, valid: Episodes, old: tuple | None = None,
                  differentiable: bool | None = None):
        """``(loss, kl, old)``: the importance-weighted post-adaptation loss averaged over tasks and
        the mean KL(current || old) on the validation rollouts. ``old=None`` returns the detached
        current distribution as ``old``. ``differentiable`` (default: ``old is None``) builds the
        graph to ``params`` (through the inner gradient unless fomaml); the line search needs none."""
        differentiable = old is None if differentiable is None else differentiable
        adapted = self.adapt(params, train, first_order=self.first_order or not differentiable)
        with torch.set_grad_enabled(differentiable):
            mean, log_std = self.policy(valid.observations, adapted)
            log_std = log_std.expand_as(mean)
            log_prob = gaussian_log_prob(valid.actions, mean, log_std)
            if old is None:
                old = (mean.detach(), log_std.detach(), log_prob.detach())
            ratio = torch.exp(log_prob - old[2])
            loss = -masked_task_mean(ratio * valid.advantages, valid.mask).mean()
            kl = masked_task_mean(gaussian_kl(mean, log_std, old[0], old[1]), valid.mask).mean()
        return loss, kl, old

    def meta_gradient(self, train: Episodes, valid: Episodes) -> list[torch.Tensor]:
        """Gradient of the post-adaptation surrogate loss with respect to every policy parameter."""
        loss, _, _ = self.surrogate(self.policy.params(), train, valid)
        return list(torch.autograd.grad(loss, list(self.policy.parameters())))

    def step(self, train: Episodes, valid: Episodes, max_kl: float = 1e-2, cg_iters: int = 10,
             cg_damping: float = 1e-5, ls_max_steps: int = 15, ls_backtrack_ratio: float = 0.8) -> dict:
        """One TRPO meta-update of the policy in place; returns the line search's log."""
        params = self.policy.params()
        loss, kl, old = self.surrogate(params, train, valid)

        def evaluate() -> tuple[float, float]:
            new_loss, new_kl, _ = self.surrogate(self.policy.params(), train, valid, old=old)
            return float(new_loss), float(new_kl)

        return trpo_step(list(self.policy.parameters()), loss, kl, evaluate, max_kl=max_kl,
                         cg_iters=cg_iters, cg_damping=cg_damping, ls_max_steps=ls_max_steps,
                         ls_backtrack_ratio=ls_backtrack_ratio)
