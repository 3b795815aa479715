"""Meta-reinforcement learning: MAML / FOMAML / ANIL with a TRPO outer loop (Finn et al. 2017, Sec. 5.3).

Environments (batched torch 2-D navigation; HalfCheetah direction / velocity on gymnasium + MuJoCo),
seeded task samplers, a Gaussian MLP policy, vectorised rollouts, returns and the linear feature
baseline, TRPO through the adaptation step, training with exact resume, evaluation before / after
adaptation and the policy's layer similarity. See docs/rl.md.

Import the submodules directly (``repana.rl.train``, ``repana.rl.evaluate``...): this package
imports nothing heavy on its own.
"""
