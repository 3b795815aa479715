"""RL run configuration (every hyperparameter of a run, written to its config.toml) and presets.

Defaults follow Finn et al. 2017 (App. A.2) and pytorch-maml-rl's configs: one inner step of lr 0.1
on 20 trajectories per task, TRPO with max KL 0.01, 10 conjugate-gradient iterations, damping 1e-5,
at most 15 line-search steps shrinking by 0.8, discount 0.99, GAE lambda 1.0, 500 meta-iterations,
meta-batch 20 (navigation) / 40 (HalfCheetah). The policy is the paper's (2 x 100 ReLU; the
pytorch-maml-rl configs use 2 x 64 tanh).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from repana.errors import ConfigError
from repana.rl.envs import check_environment
from repana.rl.presets import PRESETS

ALGORITHMS = ("maml", "fomaml", "anil")

#: Former names of RLConfig fields, accepted for configs and checkpoints that use them: {old: new}.
#: The fields share TrainConfig's names (``threads``, ``inner_lr``).
RENAMED_KEYS = {"torch_threads": "threads", "fast_lr": "inner_lr"}


def canonical_keys(values: Mapping) -> dict:
    """A copy of ``values`` with every former key name (:data:`RENAMED_KEYS`) replaced by the current one;
    ConfigError naming both when ``values`` gives a former name and its current one different values."""
    result = dict(values)
    for old, new in RENAMED_KEYS.items():
        if old not in result:
            continue
        value = result.pop(old)
        if new in result and result[new] != value:
            raise ConfigError(f"RL config gives both {old} = {value!r} and {new} = {result[new]!r} "
                              f"({old} is the former name of {new}); keep only {new}")
        result[new] = value
    return result


@dataclass
class RLConfig:
    env: str = "2d-navigation"
    algorithm: str = "maml"
    seed: int = 0
    iterations: int = 500              # meta-updates (pytorch-maml-rl's num-batches)
    meta_batch_size: int = 20          # tasks per meta-update
    fast_batch_size: int = 20          # trajectories per task, before and after adaptation
    horizon: int = 100
    inner_lr: float = 0.1              # step size of the inner policy-gradient step
    num_steps: int = 1
    adapt_log_std: bool = True         # does the inner loop adapt log_std (for every algorithm)
    hidden_sizes: list = field(default_factory=lambda: [100, 100])
    init_std: float = 1.0
    gamma: float = 0.99
    gae_lambda: float = 1.0
    max_kl: float = 1e-2
    cg_iters: int = 10
    cg_damping: float = 1e-5
    ls_max_steps: int = 15
    ls_backtrack_ratio: float = 0.8
    max_abs_log_std: float = 5.0       # stop (keeping the last good checkpoint) beyond this
    dtype: str = "float32"
    n_envs: int = 8                    # HalfCheetah: sub-environments of the vector env
    vector_mode: str = "sync"          # HalfCheetah: "sync" (in process) or "async" (worker processes)
    checkpoint_every: int = 10
    threads: int = 0                   # torch CPU threads; 0: automatic (repana.rl.train.rl_training_threads)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        check_environment(self.env)
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"unknown RL algorithm {self.algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
        for name in ("iterations", "meta_batch_size", "fast_batch_size", "horizon", "num_steps",
                     "cg_iters", "ls_max_steps", "n_envs", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"RL config {name} must be >= 1, got {getattr(self, name)}")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"RL config dtype must be float32 or float64, got {self.dtype!r}")
        if self.vector_mode not in ("sync", "async"):
            raise ConfigError(f"RL config vector_mode must be 'sync' or 'async', got {self.vector_mode!r}")
        if not 0 < self.ls_backtrack_ratio < 1 or self.max_kl <= 0 or self.inner_lr <= 0:
            raise ConfigError("RL config needs 0 < ls_backtrack_ratio < 1, max_kl > 0 and inner_lr > 0")
        self.hidden_sizes = [int(h) for h in self.hidden_sizes]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> "RLConfig":
        """A validated RLConfig from a flat mapping; former key names (:data:`RENAMED_KEYS`) load into
        their fields, unknown keys raise ConfigError."""
        values = canonical_keys(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown RL config keys {unknown}; known: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes) -> "RLConfig":
        """A copy with ``changes`` (current or former key names) applied."""
        return RLConfig.from_dict({**self.to_dict(), **canonical_keys(changes)})


def load_preset(name: str) -> RLConfig:
    """The config of a bundled preset (:data:`repana.rl.presets.PRESETS`, e.g. ``rl-2dnav``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown RL preset {name!r}; choose one of {', '.join(PRESETS)}")
    text = resources.files("repana.rl.presets").joinpath(f"{name}.toml").read_text()
    return RLConfig.from_dict(tomllib.loads(text))


def resolve_config(config_or_preset) -> RLConfig:
    """An RLConfig from itself, a dict, a preset name or a path to a TOML file."""
    if isinstance(config_or_preset, RLConfig):
        return config_or_preset
    if isinstance(config_or_preset, dict):
        return RLConfig.from_dict(config_or_preset)
    text = str(config_or_preset)
    if text in PRESETS:
        return load_preset(text)
    path = Path(text)
    if path.suffix == ".toml" and path.is_file():
        return RLConfig.from_dict(tomllib.loads(path.read_text()))
    raise ConfigError(f"{text!r} is neither an RL preset ({', '.join(PRESETS)}) nor a TOML file")
