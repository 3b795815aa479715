"""The two kinds of run, as data: supervised meta-training (a Conv4 on few-shot episodes) and RL
meta-training (a Gaussian MLP policy on a task distribution).

Everything that handles runs (``repana train``, ``evaluate``, ``reproduce``, the plan and the executors)
takes one path and asks the :class:`RunKind` of a config, a config dict, a run folder or a checkpoint
for the few steps that must differ: which config class reads the values, which trainer runs it, how
its config is written back as TOML. Nothing else branches on the kind.

    kind = kind_of_values(values)          # "env" in the values: RL
    config = kind.config_from_dict(values, source="plan")
    kind.train(config, run_dir, resume=True, device="cpu", data=None, show_progress=None)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from repana.errors import ConfigError


@dataclass(frozen=True)
class RunKind:
    """One kind of run. ``name``: ``"supervised"`` or ``"rl"`` (also the ``kind`` of its checkpoints,
    :class:`repana.meta.checkpoint.Checkpoint`, and of the analyses that read them).

    ``config_from_dict(values, source)``: the validated config (TrainConfig / RLConfig) of saved values,
    older key names accepted; ``config_toml(config)``: the TOML text ``repana train --config`` reads;
    ``train(config, run_dir, resume, device, data, show_progress)``: train or resume the run in
    ``run_dir`` (``data``: already loaded datasets, supervised only; RL trains on the CPU).
    ``resumable_changes``: config keys that may differ when a run is resumed (everything else must match
    the saved run); ``canonical_values(values)``: saved values with former key names read as the current
    ones; ``newest_step(run_dir)``: the newest saved step of a run folder (None when it has none).
    """

    name: str
    config_from_dict: Callable[[Mapping, str], Any]
    config_toml: Callable[[Any], str]
    train: Callable[..., Any]
    resumable_changes: frozenset
    canonical_values: Callable[[Mapping], dict]
    newest_step: Callable[[Path], int | None]

    def __repr__(self) -> str:
        return f"RunKind({self.name!r})"


# Keys that may differ between a run's config.toml and the config given to resume it.
SUPERVISED_RESUMABLE = frozenset({"iterations", "checkpoint_every", "keep_checkpoints", "save_steps",
                                  "log_every", "val_every", "data_root", "threads"})
RL_RESUMABLE = frozenset({"iterations", "checkpoint_every", "threads"})


def _newest_step_file(run_dir: Path) -> int | None:
    from repana.meta.train import list_step_checkpoints

    steps = list_step_checkpoints(Path(run_dir) / "checkpoints")
    return steps[-1][0] if steps else None


def _newest_rl_step(run_dir: Path) -> int | None:
    """RL runs keep one ``latest.pt`` while training (its ``step`` counts meta-updates)."""
    from repana.meta.checkpoint import CheckpointError, load_checkpoint

    latest = Path(run_dir) / "checkpoints" / "latest.pt"
    try:
        checkpoint = load_checkpoint(latest, kind="rl") if latest.is_file() else None
    except CheckpointError:
        return None
    return checkpoint.step if checkpoint is not None else None


def _supervised_config(values: Mapping, source: str = "config"):
    from repana.meta.config import from_dict

    return from_dict(values, source=source)


def _supervised_toml(config) -> str:
    from repana.meta.config import to_toml

    return to_toml(config)


def _train_supervised(config, run_dir, *, resume: bool = True, device="cpu", data=None, show_progress=None):
    from repana.meta.train import train

    return train(config, run_dir, resume=resume, device=device, data=data, show_progress=show_progress)


def _rl_config(values: Mapping, source: str = "config"):
    from repana.rl.config import RLConfig

    return RLConfig.from_dict(dict(values))


def _rl_toml(config) -> str:
    from repana.rl.train import config_toml

    return config_toml(config)


def _train_rl(config, run_dir, *, resume: bool = True, device="cpu", data=None, show_progress=None):
    from repana.rl.train import train_rl

    if str(device) != "cpu":
        raise ConfigError(f"RL runs train on the CPU (the environments step there); got device {device!r}")
    return train_rl(config, run_dir, resume=resume, show_progress=show_progress)


def _rl_canonical(values: Mapping) -> dict:
    from repana.rl.config import canonical_keys

    return canonical_keys(values)


SUPERVISED = RunKind("supervised", _supervised_config, _supervised_toml, _train_supervised,
                     SUPERVISED_RESUMABLE, dict, _newest_step_file)
RL = RunKind("rl", _rl_config, _rl_toml, _train_rl, RL_RESUMABLE, _rl_canonical, _newest_rl_step)
KINDS = {kind.name: kind for kind in (SUPERVISED, RL)}


def get_kind(name: str) -> RunKind:
    """The kind called ``name`` (``"supervised"`` or ``"rl"``); ConfigError for another name."""
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown run kind {name!r}; kinds: {', '.join(KINDS)}") from None


def kind_of_values(values: Mapping | None) -> RunKind:
    """The kind of a config's values: RL configs name an environment (``env``)."""
    return RL if isinstance(values, Mapping) and "env" in values else SUPERVISED


def kind_of_config(config) -> RunKind:
    """The kind of a TrainConfig or RLConfig."""
    from repana.rl.config import RLConfig

    return RL if isinstance(config, RLConfig) else SUPERVISED


def kind_of_run_folder(run_dir: str | Path) -> RunKind | None:
    """The kind of the run in ``run_dir`` from its ``config.toml`` (None when there is none)."""
    import tomllib

    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        return None
    try:
        values = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path} is not a readable TOML config: {error}") from None
    return kind_of_values(values)
