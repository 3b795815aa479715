"""Training configuration: one dataclass holding every hyperparameter of a run, loaded from TOML.

A run is fully described by a :class:`TrainConfig`. It comes from a preset (``repana/meta/presets``),
a TOML file, or defaults, then command-line overrides ``key=value`` (values parsed as TOML, so
``ways=20``, ``inner_lr=0.1``, ``save_steps=[100, 500]``, ``name="omni"``; a bare word is a string).
Unknown keys and impossible values raise :class:`repana.errors.ConfigError` naming the key.

The conventions that silently change results are explicit fields and are written into each run's
``config.toml``:

- ``inner_loss``: ``"mean"`` (cross-entropy averaged over the support set) or ``"sum_over_shots"``
  (summed over the N*K support examples and divided by K, as in the original MAML code). The latter's
  gradient is N times the former's, so its ``inner_lr`` corresponds to ``ways * inner_lr`` in mean
  convention; :meth:`TrainConfig.mean_loss_inner_lr` does that conversion.
- ``bn_support_query``: batch-norm statistics of support and query computed ``"apart"`` (each forward
  pass normalises its own batch, as in MAML) or ``"together"``.
- ``bn_inner_loop``: ``true`` (default): the batch-norm affine parameters adapt in the inner loop with the
  algorithm's other trainable parameters; ``false``: they are left out of the inner loop and of test-time
  adaptation (evaluation, predict, the analyses) and learned by the outer loop only, as in Finn et al.'s
  code (github.com/cbfinn/maml, utils.py ``normalize``: ``tf.contrib.layers.batch_norm`` variables are
  not in the weights dict the inner loop updates). Configs and checkpoints without the key read as true.
- ``queries_train`` / ``queries_test``: query examples per class during training and evaluation.
- ``ci``: evaluation reports a 95% confidence interval over test episodes (``"episodes"``), not the
  standard deviation over seeds.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
import warnings
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

from repana.errors import ConfigError, ConfigWarning
from repana.limits import MAX_EPISODES, MAX_INNER_LR, MAX_INNER_STEPS, MAX_ITERATIONS, MAX_QUERIES
from repana.seeds import seed_problem

DATASETS = ("glyphs", "omniglot", "miniimagenet")
# Split names each dataset knows ("" = the dataset's default: glyphs "default", omniglot "auto" (the
# paper's "maml" split on the full archives, "subset" on the shared small ones), miniimagenet "ravi").
# Kept in step with repana.data (omniglot.SPLITS, glyphs, miniimagenet); tests check that.
DATASET_SPLITS: dict[str, tuple[str, ...]] = {
    "glyphs": ("", "default"),
    "omniglot": ("", "auto", "maml", "vinyals", "background-evaluation", "alphabets", "subset"),
    "miniimagenet": ("", "ravi"),
}
# Algorithms with an inner loop in training (need >= 1 inner step); the others have none:
# multitask (query loss of the unadapted net), nil / nil_training (cosine classifier on support
# features), pretrain / multiclass (one classifier over all training classes).
INNER_LOOP_ALGORITHMS = ("maml", "fomaml", "anil", "boil", "reptile")
OTHER_ALGORITHMS = ("multitask", "nil", "nil_training", "pretrain", "multiclass")
ALGORITHMS = INNER_LOOP_ALGORITHMS + OTHER_ALGORITHMS
# (key, upper limit, reason): repana.limits holds the numbers and their sources
LIMITS: tuple[tuple[str, int, str], ...] = (
    ("iterations", MAX_ITERATIONS, "16x the paper's longest run"),
    ("inner_steps_train", MAX_INNER_STEPS, "100x the paper's 10 steps"),
    ("inner_steps_test", MAX_INNER_STEPS, "100x the paper's 10 steps"),
    ("val_episodes", MAX_EPISODES, "166x the paper's 600 test episodes"),
    ("test_episodes", MAX_EPISODES, "166x the paper's 600 test episodes"),
    ("queries_train", MAX_QUERIES, "the images of a MiniImageNet class"),
    ("queries_test", MAX_QUERIES, "the images of a MiniImageNet class"),
)
CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": DATASETS,
    "algorithm": ALGORITHMS,
    "pooling": ("max", "stride"),
    "bn_stats": ("batch", "running"),
    "head_input": ("flatten", "spatial_mean"),
    "inner_loss": ("mean", "sum_over_shots"),
    "bn_support_query": ("apart", "together"),
    "eval_method": ("adapt", "nil"),
    "ci": ("episodes",),
}


@dataclass
class TrainConfig:
    """Every hyperparameter of a meta-training run. Units: learning rates per step; counts are ints."""

    name: str = "run"
    # --- data ---
    dataset: str = "omniglot"
    data_root: str = ""               # "" -> REPANA_DATA_ROOT or ~/.cache/repana/data
    split: str = ""                   # dataset-specific split name; "" -> the dataset's default
    train_classes: int = 0            # 0: every class of the training split; N: a fixed subset of N of them
    image_size: int = 28              # pixels (square); 28 for Omniglot, 84 for MiniImageNet
    ways: int = 5
    shots: int = 1
    queries_train: int = 15           # query examples per class in training episodes
    queries_test: int = 15            # query examples per class in validation/test episodes
    # --- model (Conv4) ---
    hidden: int = 64                  # filters per conv block (64 Omniglot, 32 MiniImageNet)
    pooling: str = "max"              # "max": 2x2 max-pool; "stride": stride-2 convs (MAML Omniglot)
    bn_stats: str = "batch"           # "batch": current-batch statistics also at test (MAML)
    head_input: str = "flatten"       # "spatial_mean": conv4's map averaged over space (Finn's Omniglot net)
    # --- algorithm ---
    algorithm: str = "maml"
    meta_batch_size: int = 32         # tasks per meta-update
    inner_lr: float = 0.4             # in the convention of `inner_loss`
    inner_steps_train: int = 1
    inner_steps_test: int = 3
    inner_loss: str = "mean"
    bn_support_query: str = "apart"
    bn_inner_loop: bool = True        # false: batch-norm affine parameters learned in the outer loop only
    batch_size: int = 64              # images per step for "pretrain"/"multitask"
    # --- outer loop ---
    outer_lr: float = 1e-3            # Adam
    iterations: int = 60000           # meta-iterations (outer steps)
    # --- evaluation ---
    eval_method: str = "adapt"        # "adapt" (fine-tune the trainable params) or "nil"
    ci: str = "episodes"              # 95% CI over test episodes
    val_every: int = 500              # steps between validations; 0 = never
    val_episodes: int = 100           # fixed validation episodes
    test_episodes: int = 600
    # --- bookkeeping ---
    seed: int = 0
    threads: int = 0                  # torch CPU threads while training; 0 = torch's default
    log_every: int = 10               # steps between train rows in metrics.csv
    checkpoint_every: int = 1000      # steps between rolling checkpoints; 0 = only the final one
    keep_checkpoints: int = 3         # rolling checkpoints kept (save_steps ones are never deleted)
    save_steps: list[int] = field(default_factory=list)  # extra checkpoints kept for the analyses (0 = init)

    # ----- derived values -----
    @property
    def first_order(self) -> bool:
        return self.algorithm == "fomaml"

    @property
    def in_channels(self) -> int:
        return 3 if self.dataset == "miniimagenet" else 1

    def mean_loss_inner_lr(self) -> float:
        """``inner_lr`` expressed for a mean-over-support loss (what the inner loop uses)."""
        return self.inner_lr * self.ways if self.inner_loss == "sum_over_shots" else self.inner_lr

    def model_config(self, n_classes: int | None = None) -> dict:
        """Keyword arguments of ``repana.models.Conv4`` for this run."""
        values = {"in_channels": self.in_channels, "n_classes": n_classes or self.ways, "hidden": self.hidden,
                  "image_size": self.image_size, "pooling": self.pooling, "bn_stats": self.bn_stats}
        if self.head_input != "flatten":  # as Conv4.config: absent when default (older checkpoints)
            values["head_input"] = self.head_input
        return values

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        return from_dict({**self.to_dict(), **changes})

    def validate(self) -> "TrainConfig":
        """Raise ConfigError naming the first impossible value; return self."""
        for key, allowed in CHOICES.items():
            value = getattr(self, key)
            if value not in allowed:
                raise ConfigError(f"{key} = {value!r} is not one of {', '.join(map(repr, allowed))}")
        positive_ints = ["image_size", "ways", "shots", "queries_train", "queries_test", "hidden",
                         "meta_batch_size", "batch_size", "val_episodes", "test_episodes", "log_every",
                         "keep_checkpoints"]
        for key in positive_ints:
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} = {getattr(self, key)} must be at least 1")
        if self.ways < 2:
            raise ConfigError(f"ways = {self.ways} must be at least 2 (a 1-way task has nothing to learn)")
        if self.iterations < 1:
            raise ConfigError(f"iterations = {self.iterations} must be at least 1 (a run with no meta-iteration "
                              "has no training loss or accuracy to report)")
        for key, limit, why in LIMITS:
            if getattr(self, key) > limit:
                raise ConfigError(f"{key} = {getattr(self, key)} is above the limit of {limit:,} ({why}); "
                                  "see repana/limits.py")
        for key in ["val_every", "checkpoint_every", "inner_steps_test", "threads", "train_classes"]:
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} = {getattr(self, key)} must not be negative")
        if (problem := seed_problem(self.seed, "seed")) is not None:
            raise ConfigError(problem)
        for key in ["inner_lr", "outer_lr"]:
            value = getattr(self, key)
            if not (value > 0 and value < float("inf")):
                raise ConfigError(f"{key} = {value} must be a positive finite number")
        if self.mean_loss_inner_lr() > MAX_INNER_LR:
            raise ConfigError(f"inner_lr = {self.inner_lr:g} ({self.mean_loss_inner_lr():g} on the mean loss) is above "
                              f"the limit of {MAX_INNER_LR:g} (50x the largest of the paper's settings); "
                              "see repana/limits.py")
        if self.algorithm in INNER_LOOP_ALGORITHMS and self.inner_steps_train < 1:
            raise ConfigError(f"inner_steps_train = {self.inner_steps_train}: {self.algorithm} needs at "
                              "least 1 inner step in training")
        if self.inner_steps_train < 0:
            raise ConfigError(f"inner_steps_train = {self.inner_steps_train} must not be negative")
        if self.eval_method == "adapt" and self.inner_steps_test < 1 and self.algorithm in INNER_LOOP_ALGORITHMS:
            raise ConfigError(f"inner_steps_test = {self.inner_steps_test}: eval_method 'adapt' needs at "
                              "least 1 test step (or use eval_method = 'nil')")
        bad_steps = [s for s in self.save_steps if not 0 <= s <= self.iterations]
        if bad_steps:
            raise ConfigError(f"save_steps {bad_steps} lie outside 0..iterations ({self.iterations}); "
                              "0 saves the initial network")
        if self.split not in DATASET_SPLITS[self.dataset]:
            raise ConfigError(f"split = {self.split!r} is not a split of {self.dataset!r}; it has "
                              + ", ".join(repr(s) for s in DATASET_SPLITS[self.dataset] if s)
                              + " ('' = the dataset's default)")
        if self.dataset == "omniglot" and self.image_size != 28:
            raise ConfigError(f"image_size = {self.image_size}: Omniglot images are 28x28 in repana")
        return self

    def check_classes(self, n_classes: Mapping[str, int]) -> None:
        """Raise ConfigError when an episode needs more ways than a split has classes (the training split: its
        ``train_classes`` when set, or more classes than it has)."""
        for split, count in n_classes.items():
            if split == "train" and self.train_classes:
                if self.train_classes > count:
                    raise ConfigError(f"train_classes = {self.train_classes} is more than the {count} classes of "
                                      f"the training split of {self.dataset!r} (0 trains on all of them)")
                count = self.train_classes
            if self.ways > count:
                raise ConfigError(f"ways = {self.ways} is more than the {count} classes of the "
                                  f"{split!r} split of {self.dataset!r}")


_FIELDS = {f.name: f for f in fields(TrainConfig)}
_TYPES = typing.get_type_hints(TrainConfig)


def _coerce(key: str, value: Any) -> Any:
    """Check ``value`` against the type of field ``key``; ints are accepted for floats."""
    expected = _TYPES[key]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if expected in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key} = {value!r} must be a number, not a boolean")
    if typing.get_origin(expected) is list:
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                  for v in value):
            raise ConfigError(f"{key} = {value!r} must be a list of integers, e.g. [1000, 5000]")
        return sorted(set(value))
    if not isinstance(value, expected):
        raise ConfigError(f"{key} = {value!r} must be of type {expected.__name__}, "
                          f"not {type(value).__name__}")
    return value


def _check_keys(keys: Iterable[str], source: str) -> None:
    unknown = sorted(set(keys) - set(_FIELDS))
    if unknown:
        import difflib

        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, _FIELDS, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"unknown config key{'s' if len(unknown) > 1 else ''} in {source}: "
                          f"{', '.join(hints)}")


def from_dict(values: Mapping[str, Any], source: str = "config") -> TrainConfig:
    """A validated TrainConfig from a flat mapping (unknown keys -> ConfigError); a relative
    ``data_root`` becomes absolute (against the current directory)."""
    _check_keys(values, source)
    values = _single_split_compatibility(values)
    # a relative data root is resolved now, against the current directory (where the run trains), so a
    # run's config.toml and checkpoints work from any directory later (repana evaluate ...)
    if isinstance(values.get("data_root"), str) and values["data_root"]:
        values = {**values, "data_root": os.path.abspath(os.path.expanduser(values["data_root"]))}
    return TrainConfig(**{k: _coerce(k, v) for k, v in values.items()}).validate()


def _single_split_compatibility(values: Mapping[str, Any]) -> Mapping[str, Any]:
    """Run configs written by repana 0.1.0's ``reproduce`` on glyphs carry the Omniglot preset's split
    (``"maml"``); glyphs and MiniImageNet have one split, so another dataset's split name there can
    only mean that one: it reads as ``""`` (any other unknown name stays an error)."""
    dataset, split = values.get("dataset"), values.get("split")
    if dataset in ("glyphs", "miniimagenet") and isinstance(split, str) and split not in DATASET_SPLITS[dataset]:
        foreign = {s for name, splits in DATASET_SPLITS.items() if name != dataset for s in splits}
        if split in foreign:
            return {**values, "split": ""}
    return values


def _flatten(table: Mapping[str, Any], source: str) -> dict:
    """TOML files may group keys in tables (``[data]``, ``[model]``...); table names are ignored."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        items = value.items() if isinstance(value, dict) else [(key, value)]
        for inner_key, inner_value in items:
            if isinstance(inner_value, dict):
                raise ConfigError(f"{source}: table nested too deep at {key}.{inner_key}")
            if inner_key in flat:
                raise ConfigError(f"{source}: key {inner_key!r} given twice")
            flat[inner_key] = inner_value
    return flat


def load_toml(path: str | Path) -> dict:
    """The flat key/value mapping of a TOML config file (not yet validated)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return _flatten(tomllib.load(handle), str(path))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not a TOML text file: byte {error.start} is not UTF-8 "
                          f"({error.reason}); give a .toml file") from None


def list_presets() -> list[str]:
    """Names of the bundled presets (``repana/meta/presets/<name>.toml``)."""
    folder = resources.files("repana.meta") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def preset_values(name: str) -> dict:
    """The flat mapping of a bundled preset."""
    path = resources.files("repana.meta") / "presets" / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(list_presets())}")
    return _flatten(tomllib.loads(path.read_text(encoding="utf-8")), f"preset {name}")


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` -> (key, value) (:func:`repana.assignments.parse_assignment`), the key checked
    against TrainConfig's fields."""
    from repana.assignments import parse_assignment

    key, value = parse_assignment(text, "override")
    _check_keys([key], "overrides")
    return key, value


def _fit_save_steps(values: dict, source: str) -> None:
    """Drop the ``save_steps`` of ``values`` beyond its ``iterations`` (a ConfigWarning names them)."""
    iterations, save_steps = values.get("iterations"), values.get("save_steps")
    if not isinstance(iterations, int) or not 1 <= iterations <= MAX_ITERATIONS or not isinstance(save_steps, list):
        return   # impossible iterations: validate names them
    beyond = [s for s in save_steps if isinstance(s, int) and s > iterations]
    if beyond:
        values["save_steps"] = [s for s in save_steps if s not in beyond]
        warnings.warn(f"iterations = {iterations}: the {source}'s save_steps {beyond} lie beyond the run, so only "
                      f"{values['save_steps']} are kept (set save_steps to choose others)", ConfigWarning,
                      stacklevel=3)


def load_config(preset: str | None = None, path: str | Path | None = None,
                overrides: Iterable[str] | Mapping[str, Any] = ()) -> TrainConfig:
    """Defaults <- preset or TOML file <- overrides, validated.

    ``overrides``: strings ``"key=value"`` or a mapping. The preset's name becomes ``name`` unless set.
    Overrides that shorten ``iterations`` without naming ``save_steps`` keep the preset's or file's
    save_steps that fit in the run; a :class:`repana.errors.ConfigWarning` names those dropped.
    """
    if preset is not None and path is not None:
        raise ConfigError("give either a preset or a config file, not both")
    values: dict[str, Any] = {}
    if preset is not None:
        values = {"name": preset, **preset_values(preset)}
    elif path is not None:
        values = load_toml(path)
        _check_keys(values, str(path))
    items = list(overrides.items() if isinstance(overrides, Mapping) else map(parse_override, overrides))
    base_dataset = values.get("dataset", TrainConfig.dataset)
    for key, value in items:
        _check_keys([key], "overrides")
        values[key] = value
    # a preset's or file's split names a split of its own dataset: when the overrides switch to another
    # dataset without naming a split, that dataset's default split applies
    overridden = dict(items)
    if "dataset" in overridden and overridden["dataset"] != base_dataset and "split" not in overridden:
        values["split"] = ""
    # a run shortened by the overrides keeps the preset's or file's save_steps that fit, and says so
    if "iterations" in overridden and "save_steps" not in overridden:
        _fit_save_steps(values, str(path or (f"preset {preset}" if preset else "config")))
    return from_dict(values, source=str(path or (f"preset {preset}" if preset else "config")))


def to_toml(config: TrainConfig) -> str:
    """The resolved config as TOML text (what ``config.toml`` of a run holds)."""
    import tomli_w

    header = ("# Resolved repana training config. Conventions: inner_loss, bn_support_query, bn_inner_loop,\n"
              "# queries_train/queries_test and ci are recorded because they change results.\n")
    return header + tomli_w.dumps(config.to_dict())
