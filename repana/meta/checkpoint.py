"""Checkpoints of a training run, of either kind (:mod:`repana.runs.kinds`): model, optimizer, step, every
RNG state, resolved config, metrics. One type, :class:`Checkpoint`, whose ``kind`` says which: a
supervised Conv4 (``"supervised"``) or an RL policy (``"rl"``); one loader, :func:`load_checkpoint`.

A checkpoint is one ``torch.save``d dict holding only tensors and primitive containers, so it loads
with ``torch.load(weights_only=True)`` (no code runs on load). A supervised run's::

    {"format": "repana-checkpoint", "format_version": 1, "repana_version": "0.1.0",
     "model_config": {...build_model kwargs...}, "algorithm": "anil", "config": {...TrainConfig...},
     "state_dict": {...}, "optimizer": {...} | None, "step": 1200,
     "rng": {"python": [...], "numpy": {...}, "torch": ByteTensor, "cuda": [...], "sampler": {...}},
     "metrics": {"val_accuracy": 0.81, ...}, "runtime": {"threads": 2, "torch_version": ...},
     "checksum": {"algorithm": "sha256", "hex": "..."}}

An RL run's (its format tag says the kind; ``iteration`` counts meta-updates, ``metrics`` holds one row per
meta-update, ``policy_config`` the GaussianMLPPolicy kwargs)::

    {"format": "repana-rl-checkpoint", "format_version": 1, "repana_version": "0.1.0",
     "config": {...RLConfig...}, "policy_config": {...}, "state_dict": {...}, "iteration": 120,
     "rng": {"tasks": "<json of the numpy bit generator state>", "actions": ByteTensor},
     "metrics": [{"iteration": 0, "return_before": ..., ...}, ...], "runtime": {"threads": 1},
     "checksum": {...}}

Files are written atomically (``repana.io.atomic_torch_save``): a crash mid-write leaves the previous
file intact and never a partial file under the final name. Loading a truncated or corrupt file, one
of another format version, or one whose weights do not fit its architecture raises
:class:`repana.errors.CheckpointError` naming the problem.

Each checkpoint proves itself: ``checksum`` is a SHA-256 over every other entry (tensors by dtype,
shape and raw bytes, in sorted key order; numbers and strings by their repr), verified on load, so a
flipped byte anywhere in the weights, optimizer state, RNG states or config is a "checksum mismatch"
error instead of a silently different network; the weights must also be finite. Checkpoints written
before checksums existed still load, with a warning that they could not be verified.
"""

from __future__ import annotations

import hashlib
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repana import __version__
from repana.errors import CheckpointError
from repana.io import atomic_torch_save

FORMAT = "repana-checkpoint"
RL_FORMAT = "repana-rl-checkpoint"
FORMAT_VERSION = 1
KIND_OF_FORMAT = {FORMAT: "supervised", RL_FORMAT: "rl"}
_REQUIRED = {FORMAT: ("format", "format_version", "repana_version", "model_config", "algorithm", "config",
                      "state_dict", "optimizer", "step", "rng", "metrics"),
             RL_FORMAT: ("format", "format_version", "config", "policy_config", "state_dict", "iteration", "rng",
                         "metrics")}
CHECKSUM_ALGORITHM = "sha256"


# ----- integrity -----

def _feed(hasher, obj: Any) -> None:
    """Feed ``obj`` to ``hasher`` in a canonical form: dict keys sorted (by repr), tensors as dtype,
    shape and raw bytes, everything else by type name and repr."""
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu().contiguous()
        hasher.update(f"T{tensor.dtype}{tuple(tensor.shape)}:".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        hasher.update(f"D{len(obj)}:".encode())
        for key in sorted(obj, key=repr):
            _feed(hasher, key)
            _feed(hasher, obj[key])
    elif isinstance(obj, (list, tuple)):
        hasher.update(f"{type(obj).__name__[0]}{len(obj)}:".encode())
        for item in obj:
            _feed(hasher, item)
    else:
        hasher.update(f"{type(obj).__name__}:{obj!r};".encode())


def payload_checksum(payload: dict) -> str:
    """SHA-256 (hex) of every entry of a checkpoint payload except ``checksum`` itself."""
    hasher = hashlib.sha256()
    _feed(hasher, {k: v for k, v in payload.items() if k != "checksum"})
    return hasher.hexdigest()


def verify_payload(payload: dict, path: Path) -> bool:
    """CheckpointError on a checksum mismatch or non-finite weights; False when there is no checksum."""
    stored = payload.get("checksum")
    verified = False
    if stored is not None:
        if not isinstance(stored, dict) or stored.get("algorithm") != CHECKSUM_ALGORITHM:
            raise CheckpointError(f"checkpoint {path}: checksum entry {stored!r} is unreadable; the file is corrupt")
        if payload_checksum(payload) != stored.get("hex"):
            raise CheckpointError(f"checkpoint {path}: checksum mismatch: the file is corrupt (its tensors or "
                                  "config changed after it was written); use another checkpoint of the run")
        verified = True
    state = payload["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: its state_dict is not a dict; the file is corrupt")
    bad = [name for name, value in state.items()
           if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        raise CheckpointError(f"checkpoint {path} holds non-finite weights (NaN or inf) in {', '.join(bad[:5])}: "
                              "the run diverged or the file is corrupt")
    return verified


# ----- RNG states as tensors / primitives (weights_only-safe) -----

def capture_rng_state(sampler_state: dict | None = None) -> dict:
    """Every global RNG state (python, numpy, torch CPU and CUDA) plus the sampler's, as primitives."""
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    state = {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {"bit_generator": numpy_state["bit_generator"],
                  "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                  "pos": int(numpy_state["state"]["pos"]),
                  "has_gauss": int(numpy_state["has_gauss"]), "gauss": float(numpy_state["gauss"])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "sampler": dict(sampler_state or {}),
    }
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state` for the global RNGs (the sampler's is the caller's)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    np_state = state["numpy"]
    np.random.set_state({"bit_generator": np_state["bit_generator"],
                         "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
                         "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]})
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----- the checkpoint -----

@dataclass
class Checkpoint:
    """A loaded checkpoint of either kind. ``model()`` rebuilds its network (the Conv4, or the RL policy)
    with its weights; ``train_config()`` its resolved TrainConfig or RLConfig.

    ``model_config``: the network's build kwargs (RL: the policy's); ``step``: completed optimizer steps
    (RL: meta-updates); ``metrics``: flat numbers (RL: the last meta-update's row); ``history``: RL only,
    one metrics row per meta-update; ``kind``: ``"supervised"`` or ``"rl"``.
    """

    model_config: dict
    algorithm: str
    config: dict
    state_dict: dict[str, torch.Tensor]
    step: int
    optimizer_state: dict | None = None
    rng: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    repana_version: str = __version__
    path: Path | None = None
    runtime: dict = field(default_factory=dict)   # threads, torch version, deterministic flags
    verified: bool = False                         # the checksum was present and matched
    kind: str = "supervised"                       # or "rl" (repana.runs.kinds)
    history: list = field(default_factory=list)    # RL: one metrics row per meta-update

    def model(self, device: str | torch.device | None = None) -> torch.nn.Module:
        """The network of this checkpoint, weights loaded, on ``device``: the Conv4 in eval mode, or the RL
        policy in its config's dtype."""
        try:
            if self.kind == "rl":
                from repana.rl.policy import GaussianMLPPolicy

                model = GaussianMLPPolicy(**self.model_config).to(getattr(torch, self.train_config().dtype))
            else:
                from repana.models import build_model

                model = build_model(dict(self.model_config))
        except (TypeError, ValueError, KeyError) as error:
            raise CheckpointError(f"{self._where()}: cannot build the model from its config "
                                  f"{self.model_config}: {error}") from None
        load_weights(model, self.state_dict, where=self._where())
        if self.kind != "rl":
            model.eval()
        return model.to(device) if device is not None else model

    def train_config(self):
        """The resolved config of the run: a :class:`repana.meta.config.TrainConfig`, or an
        :class:`repana.rl.config.RLConfig` for an RL checkpoint (former key names read as current ones)."""
        from repana.runs.kinds import get_kind

        return get_kind(self.kind).config_from_dict(self.config, self._where())

    @property
    def env(self) -> str:
        """RL: the environment the policy was meta-trained on."""
        if self.kind != "rl":
            raise CheckpointError(f"{self._where()} is a supervised checkpoint; it has no environment")
        return str(self.config["env"])

    def _where(self) -> str:
        return f"checkpoint {self.path}" if self.path else "checkpoint"


def load_weights(model: torch.nn.Module, state_dict: dict, where: str = "checkpoint") -> None:
    """``model.load_state_dict(strict=True)``, mismatches reported as CheckpointError."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}")
        if wrong:
            parts.append("shape mismatch " + ", ".join(
                f"{k}: {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong[:5]))
        raise CheckpointError(f"{where} is from another architecture: " + "; ".join(parts))
    model.load_state_dict(state_dict)


def _write_with_checksum(payload: dict, path: str | Path) -> Path:
    """Add the payload's checksum (:func:`payload_checksum`) and write it atomically; returns the path."""
    payload["checksum"] = {"algorithm": CHECKSUM_ALGORITHM, "hex": payload_checksum(payload)}
    path = Path(path)
    atomic_torch_save(payload, path)
    return path


def save_checkpoint(path: str | Path, *, model: torch.nn.Module, model_config: dict, algorithm: str,
                    config: dict, step: int, optimizer: torch.optim.Optimizer | None = None,
                    rng: dict | None = None, metrics: dict | None = None, runtime: dict | None = None) -> Path:
    """Write a checkpoint atomically to ``path``; returns the path.

    ``rng``: from :func:`capture_rng_state` (captured now when omitted). ``metrics``: flat dict of
    numbers. ``config``: the resolved TrainConfig as a dict. ``runtime``: what the results depend on
    beyond the config (:func:`runtime_record`, taken now when omitted). A checksum of everything is
    stored with it.
    """
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "repana_version": __version__,
        "model_config": dict(model_config),
        "algorithm": str(algorithm),
        "config": dict(config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": _to_cpu(optimizer.state_dict()) if optimizer is not None else None,
        "step": int(step),
        "rng": rng if rng is not None else capture_rng_state(),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "runtime": dict(runtime) if runtime is not None else runtime_record(),
    }
    return _write_with_checksum(payload, path)


def save_rl_checkpoint(path, *, config: dict, policy_config: dict, state_dict: dict, iteration: int,
                       rng: dict, metrics: list, runtime: dict | None = None) -> Path:
    """Write an RL run's checkpoint atomically (the format in the module docstring), with its checksum.
    ``rng``: ``{"tasks": json text, "actions": ByteTensor}``; ``metrics``: one row per meta-update;
    ``runtime``: how the run ran (``{"threads": n}``), read back on resume."""
    payload = {"format": RL_FORMAT, "format_version": FORMAT_VERSION, "repana_version": __version__,
               "config": config, "policy_config": policy_config,
               "state_dict": {k: v.detach().clone() for k, v in state_dict.items()},
               "iteration": int(iteration), "rng": rng, "metrics": list(metrics), "runtime": dict(runtime or {})}
    return _write_with_checksum(payload, path)


def runtime_record(threads: int | None = None) -> dict:
    """What a run's numbers depend on beyond its config: torch's intra-op threads (floating-point sums
    are split differently per thread count), the torch version and its deterministic flags."""
    return {"threads": int(threads if threads is not None else torch.get_num_threads()),
            "torch_version": str(torch.__version__),
            "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled()),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic)}


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


# evaluate, predict, analyze and train have no --unsafe-pickle: the opt-in for a trusted checkpoint is Python
CHECKPOINT_UNSAFE_ADVICE = "load it in Python with repana.meta.checkpoint.load_checkpoint(path, unsafe_pickle=True)"


def _read_payload(path: Path, unsafe_pickle: bool = False) -> dict:
    """The unpickled checkpoint dict of either kind, its format tag and version checked (CheckpointError)."""
    from repana.data.safe_pickle import torch_load

    payload = torch_load(path, unsafe_pickle=unsafe_pickle, what="checkpoint", error_class=CheckpointError,
                         opt_in=CHECKPOINT_UNSAFE_ADVICE)
    if not isinstance(payload, dict) or payload.get("format") not in KIND_OF_FORMAT:
        raise CheckpointError(f"{path} is not a repana checkpoint (no '{FORMAT}' format tag)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {payload.get('format_version')} (written by repana "
            f"{payload.get('repana_version')}), this repana {__version__} reads version {FORMAT_VERSION}")
    return payload


def checkpoint_kind(path: str | Path) -> str | None:
    """``"supervised"`` or ``"rl"`` for a readable repana checkpoint, None for any other file (no exception)."""
    try:
        return KIND_OF_FORMAT[_read_payload(Path(path))["format"]]
    except CheckpointError:
        return None


def as_checkpoint(path_or_checkpoint, kind: str | None = "supervised") -> Checkpoint:
    """A loaded :class:`Checkpoint` as it is, or the checkpoint at a path (:func:`load_checkpoint`); either must
    be of ``kind`` (None: either kind)."""
    if isinstance(path_or_checkpoint, Checkpoint):
        if kind is not None and path_or_checkpoint.kind != kind:
            raise CheckpointError(f"{path_or_checkpoint._where()} {_WRONG_KIND[path_or_checkpoint.kind]}")
        return path_or_checkpoint
    return load_checkpoint(path_or_checkpoint, kind=kind)


_WRONG_KIND = {
    "rl": "is an RL checkpoint (a meta-trained policy), not a repana checkpoint of a supervised model: `repana "
          "evaluate` takes it (returns before / after adaptation), `repana train --out RUN --resume` continues its run",
    "supervised": "is not an RL checkpoint: its format is 'repana-checkpoint' (a supervised checkpoint: use repana "
                  "evaluate / analyze on it)",
}


def load_checkpoint(path: str | Path, expected_model_config: dict | None = None,
                    unsafe_pickle: bool = False, kind: str | None = "supervised") -> Checkpoint:
    """Read and check a checkpoint (CPU tensors).

    ``kind``: the kind the caller takes (``"supervised"``, ``"rl"``, or None for either); a checkpoint of
    the other kind is a CheckpointError saying what it is. Raises CheckpointError when the file is
    missing, not a torch file, truncated or corrupt, holds pickled objects that safe loading refuses
    (``unsafe_pickle=True`` loads a trusted one with full pickle), is not a repana checkpoint, has
    another format version, fails its checksum, holds non-finite weights, or (with
    ``expected_model_config``) is of another architecture. A checkpoint without a checksum (written
    before repana had them) loads with a warning.
    """
    path = Path(path)
    payload = _read_payload(path, unsafe_pickle)
    found = KIND_OF_FORMAT[payload["format"]]
    if kind is not None and found != kind:
        raise CheckpointError(f"{path} {_WRONG_KIND[found]}")
    missing = [k for k in _REQUIRED[payload["format"]] if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the entries {missing}; it is corrupt")
    verified = verify_payload(payload, path)
    if not verified:
        warnings.warn(f"checkpoint {path} has no checksum (written by repana "
                      f"{payload.get('repana_version', 'unknown')} before checkpoints carried one): loaded "
                      "without an integrity check", stacklevel=2)
    if found == "rl":
        rows = [dict(row) for row in payload["metrics"]]
        return Checkpoint(model_config=dict(payload["policy_config"]), algorithm=str(payload["config"]["algorithm"]),
                          config=dict(payload["config"]), state_dict=payload["state_dict"],
                          step=int(payload["iteration"]), rng=payload["rng"], metrics=dict(rows[-1]) if rows else {},
                          repana_version=payload.get("repana_version", "unknown"), path=path,
                          runtime=dict(payload.get("runtime") or {}), verified=verified, kind="rl", history=rows)
    if expected_model_config is not None and dict(expected_model_config) != payload["model_config"]:
        differ = sorted(k for k in set(expected_model_config) | set(payload["model_config"])
                        if expected_model_config.get(k) != payload["model_config"].get(k))
        raise CheckpointError(
            f"checkpoint {path} is from another architecture: " + ", ".join(
                f"{k} = {payload['model_config'].get(k)!r} (expected {expected_model_config.get(k)!r})"
                for k in differ))
    return Checkpoint(model_config=payload["model_config"], algorithm=payload["algorithm"],
                      config=payload["config"], state_dict=payload["state_dict"], step=int(payload["step"]),
                      optimizer_state=payload["optimizer"], rng=payload["rng"], metrics=payload["metrics"],
                      repana_version=payload["repana_version"], path=path,
                      runtime=dict(payload.get("runtime") or {}), verified=verified)
