"""RL checkpoints: one ``torch.save``d dict of tensors and primitives (loads with weights_only=True)::

    {"format": "repana-rl-checkpoint", "format_version": 1, "repana_version": "0.1.0",
     "config": {...RLConfig...}, "policy_config": {...GaussianMLPPolicy kwargs...},
     "state_dict": {...}, "iteration": 120,                    # completed meta-updates
     "rng": {"tasks": "<json of the numpy bit generator state>", "actions": ByteTensor},
     "metrics": [{"iteration": 0, "return_before": ..., ...}, ...]}

Written atomically (``repana.io.atomic_torch_save``). A file of another kind (a supervised repana
checkpoint, anything else) raises :class:`repana.errors.CheckpointError` naming what it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from repana import __version__
from repana.errors import CheckpointError
from repana.io import atomic_torch_save

FORMAT = "repana-rl-checkpoint"
FORMAT_VERSION = 1
_REQUIRED = ("format", "format_version", "config", "policy_config", "state_dict", "iteration", "rng",
             "metrics")


def save_rl_checkpoint(path, *, config: dict, policy_config: dict, state_dict: dict, iteration: int,
                       rng: dict, metrics: list, runtime: dict | None = None) -> None:
    """Write an RL checkpoint atomically, with the SHA-256 of its whole payload (verified on load, as for
    supervised checkpoints: :func:`repana.meta.checkpoint.payload_checksum`). ``runtime``: how the run
    ran (``{"threads": n}``), read back on resume."""
    from repana.meta.checkpoint import CHECKSUM_ALGORITHM, payload_checksum

    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "repana_version": __version__,
               "config": config, "policy_config": policy_config,
               "state_dict": {k: v.detach().clone() for k, v in state_dict.items()},
               "iteration": int(iteration), "rng": rng, "metrics": list(metrics), "runtime": dict(runtime or {})}
    payload["checksum"] = {"algorithm": CHECKSUM_ALGORITHM, "hex": payload_checksum(payload)}
    atomic_torch_save(payload, path)


def _read(path) -> object:
    """The unpickled file (``weights_only``); CheckpointError for a missing, empty, truncated or foreign file
    (:func:`repana.data.safe_pickle.torch_load`: one line naming what the file is)."""
    from repana.data.safe_pickle import torch_load

    return torch_load(Path(path), what="checkpoint", error_class=CheckpointError)


def is_rl_checkpoint(path) -> bool:
    """True when ``path`` is a readable repana RL checkpoint (no exception for other files)."""
    try:
        data = _read(path)
    except CheckpointError:
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def load_rl_checkpoint(path) -> dict:
    """The checkpoint dict, validated; CheckpointError for a supervised or foreign checkpoint."""
    data = _read(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        kind = data.get("format") if isinstance(data, dict) else type(data).__name__
        hint = " (a supervised checkpoint: use repana evaluate / analyze on it)" \
            if kind == "repana-checkpoint" else ""
        raise CheckpointError(f"{path} is not an RL checkpoint: its format is {kind!r}{hint}")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has RL checkpoint format version {data.get('format_version')}, "
                              f"this repana reads {FORMAT_VERSION}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise CheckpointError(f"{path} lacks the RL checkpoint fields {missing}")
    from repana.meta.checkpoint import verify_payload
    verify_payload(data, Path(path))  # checksum (older RL checkpoints have none) and finite weights
    return data


def load_policy(path_or_checkpoint):
    """``(policy, config: RLConfig, checkpoint dict)`` with the checkpoint's weights and dtype."""
    from repana.rl.config import RLConfig
    from repana.rl.policy import GaussianMLPPolicy
    data = path_or_checkpoint if isinstance(path_or_checkpoint, dict) else load_rl_checkpoint(path_or_checkpoint)
    config = RLConfig.from_dict(dict(data["config"]))
    policy = GaussianMLPPolicy(**data["policy_config"]).to(getattr(torch, config.dtype))
    try:
        policy.load_state_dict(data["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"the RL checkpoint's weights do not fit its policy config: {err}") from err
    return policy, config, data


@dataclass
class RLCheckpoint:
    """A loaded RL checkpoint, as the analysis registry reads checkpoints (``kind == "rl"``; supervised
    :class:`repana.meta.checkpoint.Checkpoint` s have ``kind == "supervised"``).

    ``data``: the validated checkpoint dict; ``path``: its file (None when built from a dict).
    """

    data: dict
    path: Path | None = None
    kind: ClassVar[str] = "rl"

    @classmethod
    def load(cls, path) -> "RLCheckpoint":
        return cls(load_rl_checkpoint(path), Path(path))

    @property
    def algorithm(self) -> str:
        return str(self.data["config"]["algorithm"])

    @property
    def env(self) -> str:
        return str(self.data["config"]["env"])

    @property
    def iteration(self) -> int:
        """Completed meta-updates."""
        return int(self.data["iteration"])

    @property
    def step(self) -> int:
        return self.iteration

    def policy(self):
        """``(policy, RLConfig)`` with the checkpoint's weights."""
        policy, config, _ = load_policy(self.data)
        return policy, config
