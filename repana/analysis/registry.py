"""The analysis registry: one :class:`Analysis` per table or figure of the paper.

Each analysis module (``repana/analysis/<name>.py``) declares, in one place, everything about it:

- ``name``: its one name, used by ``repana analyze <name>``, its ``analyses/<name>.toml`` entry, its CSV
  files (``<name>.csv``, ``<name>_<table>.csv``), its figure files (``<name>.png``, ``<name>_<figure>.png``)
  and its report section;
- ``networks``: the training runs of ``repana reproduce`` it needs (run names, e.g. ``("maml", "anil")``)
  and, for ``repana analyze``, how many checkpoints it takes (``n_checkpoints``);
- ``compute(context) -> {table name: tidy DataFrame}``: the work (settings per preset come from the TOML
  entry, see :func:`load_settings`);
- ``figures(tables, context) -> {stem: figure builder}``;
- ``report(tables, context) -> Section``: the report section, with the rule that decides whether each
  finding agrees with the paper.

``repana reproduce`` and ``repana analyze`` both iterate this registry; adding an analysis is one module
(registered in ``ANALYSIS_MODULES``) and one TOML entry.
"""

from __future__ import annotations

import importlib
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from repana.analysis.paper_values import Verdict
from repana.errors import ConfigError, InputError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from repana.meta.checkpoint import Checkpoint
    from repana.meta.config import TrainConfig

PRESETS = ("quick", "paper")
# Modules that register an analysis, in report order.
ANALYSIS_MODULES = ("learning_curves", "inner_loop_similarity", "freezing", "training_dynamics", "maml_anil_nil",
                    "seed_pair_similarity", "maml_anil_similarity", "training_regimes", "head_needed", "convergence",
                    "feature_reuse_map", "rl_returns", "rl_policy_similarity")
ANALYSIS_QUERIES = 15    # query images per class in the analyses' test episodes (datapoints)
ANALYSIS_SEED = 12345    # seed of the analyses' test episodes (plus each analysis's episode_offset)

AGREES, DISAGREES, NO_VERDICT = Verdict.AGREES, Verdict.DISAGREES, Verdict.NO_VERDICT


@dataclass(frozen=True)
class Finding:
    """One statement of a report section and, for a claim of the paper, its verdict.

    ``text``: the statement as the section lists it. For a judged claim (see :meth:`judged`) also:
    ``claim`` (the paper's claim in a few words), ``location`` (its table / figure / section),
    ``paper`` (the paper's value as printed, or its stated threshold), ``ours`` (our value, same unit),
    ``verdict`` and ``reason`` (the rule applied and, when it does not agree, why). The report's
    findings table has one row per finding with a ``claim``.
    """

    text: str
    verdict: Verdict = NO_VERDICT
    claim: str = ""
    location: str = ""
    paper: str = ""
    ours: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdict", Verdict(self.verdict))

    @classmethod
    def judged(cls, judgement: tuple, *, claim: str, location: str, paper: str, ours: str,
               prefix: str = "") -> "Finding":
        """The finding of a :mod:`repana.analysis.paper_values` rule's ``(verdict, reason)``; ``prefix``
        starts its text (e.g. the network it is about)."""
        verdict, reason = judgement
        return cls(f"{prefix}{reason}", Verdict(verdict), claim=claim, location=location, paper=paper,
                   ours=ours, reason=reason)

    def __str__(self) -> str:
        return self.text if self.verdict is NO_VERDICT else f"{self.text} -> **{self.verdict}**."


FIGURES = "@FIGURES@/"   # placeholder of the figures folder in a section's links (see Section.for_setting)


@dataclass(frozen=True)
class Section:
    """A report section: markdown body (tables, figures) and its findings.

    Figure links in ``body`` start with :data:`FIGURES` (written by
    :func:`repana.analysis.report.figure_markdown`); :meth:`for_setting` points them at a folder.
    """

    title: str
    body: str
    findings: tuple[Finding, ...] = ()
    setting: str = ""

    def for_setting(self, setting: str, figures_folder: str) -> "Section":
        """This section for one setting of a reproduction, its figures under ``figures_folder``."""
        return Section(self.title, self.body.replace(FIGURES, figures_folder), self.findings, setting)

    def markdown(self) -> str:
        listed = "\n".join(f"- {finding}" for finding in self.findings)
        title = f"{self.title} -- {self.setting}" if self.setting else self.title
        return f"## {title}\n\n{self.body.replace(FIGURES, '').rstrip()}\n\n{listed}\n"


Tables = dict[str, "pd.DataFrame"]


@dataclass(frozen=True)
class Analysis:
    """One paper analysis (see the module docstring)."""

    name: str
    title: str
    reference: str                                          # the paper's table / figure
    networks: tuple[str, ...]                               # reproduce's training runs it needs
    compute: Callable[["AnalysisContext"], Tables]
    report: Callable[[Tables, "AnalysisContext"], Section]
    figures: Callable[[Tables, "AnalysisContext"], dict[str, Callable[[], Any]]] = lambda tables, context: {}
    n_checkpoints: tuple[int, int | None] = (1, None)       # repana analyze: min and max checkpoints
    episode_offset: int = 0                                 # its test episodes: ANALYSIS_SEED + offset
    uses_history: bool = False                              # reads the step checkpoints of its runs too
    across_seeds: bool = False                              # compares seeds: gets "<run>/seed<k>" networks
    min_seeds: int = 1                                      # reproduce: seeds per network it needs
    # reproduce: one extra section from every setting's (tables, context), e.g. a table's cells
    across_settings: Callable[[dict[str, tuple[Tables, "AnalysisContext"]]], Section] | None = None
    summary_table: str | None = None                        # table printed by repana analyze (default: name)
    kind: str = "supervised"                                # checkpoints it reads: "supervised" or "rl"
    optional: bool = False                                  # reproduce: run only when named (--only), e.g. a grid

    def check_table_names(self, tables: Mapping[str, Any]) -> None:
        bad = [t for t in tables if t != self.name and not t.startswith(self.name + "_")]
        if bad:
            raise AssertionError(f"analysis {self.name!r} returned tables {bad}: names must be "
                                 f"{self.name!r} or start with '{self.name}_'")


_REGISTRY: dict[str, Analysis] = {}
CHECKPOINT_KINDS = ("supervised", "rl")


def register(analysis: Analysis) -> Analysis:
    """Add ``analysis`` to the registry (module import time); returns it."""
    if analysis.kind not in CHECKPOINT_KINDS:
        raise ConfigError(f"analysis {analysis.name!r}: kind {analysis.kind!r} is not one of {CHECKPOINT_KINDS}")
    if analysis.name in _REGISTRY and _REGISTRY[analysis.name] is not analysis:
        raise ConfigError(f"two analyses are named {analysis.name!r}")
    _REGISTRY[analysis.name] = analysis
    return analysis


def _load_all() -> None:
    for module in ANALYSIS_MODULES:
        importlib.import_module(f"repana.analysis.{module}")


def list_analyses(kind: str | None = None) -> list[str]:
    """Registered analysis names, in report order (``kind``: only those reading "supervised" or "rl"
    checkpoints)."""
    _load_all()
    names = [name for name in ANALYSIS_MODULES if name in _REGISTRY] + sorted(set(_REGISTRY) - set(ANALYSIS_MODULES))
    return [name for name in names if kind is None or _REGISTRY[name].kind == kind]


def load_analysis_checkpoint(path: str | Path):
    """A checkpoint of either kind for the analyses (:class:`repana.meta.checkpoint.Checkpoint`; its ``kind``
    says which analyses read it; CheckpointError for anything else)."""
    from repana.meta.checkpoint import load_checkpoint

    return load_checkpoint(path, kind=None)


def check_checkpoint_kind(analysis: Analysis, checkpoint, where: str | Path | None = None) -> None:
    """InputError (one line naming the analyses that fit) when ``checkpoint`` is not of ``analysis.kind``."""
    if checkpoint.kind == analysis.kind:
        return
    where = where or checkpoint.path or "the checkpoint"
    fitting = ", ".join(list_analyses(checkpoint.kind))
    if checkpoint.kind == "rl":
        raise InputError(f"{where} is an RL checkpoint (a meta-trained policy) and analysis {analysis.name!r} "
                         f"reads supervised checkpoints: analyse it with one of {fitting} (returns alone: "
                         "`repana evaluate CKPT`)")
    raise InputError(f"{where} is a supervised checkpoint ({checkpoint.algorithm}) and analysis {analysis.name!r} "
                     f"reads RL checkpoints (`repana train --preset rl-2dnav ...`): analyse it with one of {fitting}")


# Older analysis names (``-`` and ``_`` are the same) -> the current name: get_analysis accepts both.
RENAMED_ANALYSES = {"inner_loop": "inner_loop_similarity", "dynamics": "training_dynamics",
                    "comparison": "maml_anil_nil", "similarity": "maml_anil_similarity",
                    "regimes": "training_regimes"}


def get_analysis(name: str) -> Analysis:
    """The analysis called ``name`` (``-`` and ``_`` are the same); ConfigError naming the choices.

    A name of :data:`RENAMED_ANALYSES` gives the analysis it is now, with one note on stderr.
    """
    _load_all()
    key = name.replace("-", "_")
    if key in RENAMED_ANALYSES:
        key = RENAMED_ANALYSES[key]
        print(f"note: analysis {name!r} is now {key!r}", file=sys.stderr)
    if key not in _REGISTRY:
        raise ConfigError(f"unknown analysis {name!r}; choose one of {', '.join(list_analyses())}")
    return _REGISTRY[key]


# ----- settings (analyses/<name>.toml) -----------------------------------------------------------

def default_analyses_dir():
    """The bundled analyses/ folder (:func:`repana.resources.analyses_folder`: the source checkout's, else the
    copy installed with the package)."""
    from repana.resources import analyses_folder

    return analyses_folder()


def load_entries(preset: str, analyses_dir: str | Path | None = None) -> dict[str, dict]:
    """Every ``analyses/*.toml`` entry for ``preset``: name -> {reference, command, ..., settings}.

    ``analyses_dir``: a folder of entries (default: the bundled ones, read with ``importlib.resources``).
    Each entry's ``name`` must be a registered analysis, in a file named after it.
    """
    from repana.resources import analyses_files

    if preset not in PRESETS:
        raise ConfigError(f"preset {preset!r} is not one of {PRESETS}")
    if analyses_dir is not None:
        folder = Path(analyses_dir)
        files = sorted(folder.glob("*.toml")) if folder.is_dir() else []
    else:
        folder, files = default_analyses_dir(), analyses_files()
    if not files:
        raise ConfigError(f"no analysis entries (*.toml) in {folder}: pass --analyses DIR pointing at the "
                          "analyses/ folder of the repana source")
    entries = {}
    for path in files:
        try:
            entry = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML ({error})") from None
        name = entry.get("name", path.name[:-len(".toml")])
        analysis = get_analysis(name)
        if path.name != f"{analysis.name}.toml":
            raise ConfigError(f"{path}: the entry of analysis {analysis.name!r} must be named {analysis.name}.toml")
        if preset not in entry:
            raise ConfigError(f"{path} has no [{preset}] settings")
        entries[analysis.name] = {**{k: v for k, v in entry.items() if k not in PRESETS},
                                  "settings": dict(entry[preset])}
    return entries


def load_settings(name: str, preset: str = "paper", analyses_dir: str | Path | None = None) -> dict:
    """The ``[preset]`` settings of one analysis's TOML entry."""
    entries = load_entries(preset, analyses_dir)
    if name not in entries:
        raise ConfigError(f"no analyses entry for {name!r} in {analyses_dir or default_analyses_dir()}")
    return entries[name]["settings"]


# ----- what an analysis works on ------------------------------------------------------------------

@dataclass
class AnalysisContext:
    """Everything an analysis computes from: typed checkpoints, data, settings, the test-time inner loop.

    ``networks``: label -> :class:`repana.meta.checkpoint.Checkpoint` (reproduce: its run names; analyze:
    the checkpoints given, labelled by their algorithm). ``reference``: the label whose resolved
    :class:`TrainConfig` defines the episodes (ways, shots) and the default inner loop. ``steps`` / ``lr``:
    test-time inner steps and step size (mean-loss convention); None = the reference run's own.
    ``data``: ``{"train", "val", "test"}`` datasets, loaded from the reference run's dataset when None.
    """

    networks: dict[str, "Checkpoint"]
    settings: dict
    preset: str = "paper"
    reference: str | None = None
    steps: int | None = None
    lr: float | None = None
    data: dict | None = None
    data_root: str | Path | None = None
    dataset: str | None = None
    queries: int = ANALYSIS_QUERIES
    seed: int = ANALYSIS_SEED
    episode_offset: int = 0
    extras: dict = field(default_factory=dict)     # orchestration facts for reports (e.g. run timings)
    _models: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.networks:
            raise InputError("an analysis needs at least one checkpoint")
        kinds = sorted({checkpoint.kind for checkpoint in self.networks.values()})
        if len(kinds) > 1:
            raise InputError("an analysis reads either supervised or RL checkpoints, not both: "
                             + ", ".join(f"{label} is {c.kind}" for label, c in self.networks.items()))
        if self.reference is None:
            self.reference = next(iter(self.networks))
        if self.reference not in self.networks:
            raise InputError(f"reference network {self.reference!r} is not among {list(self.networks)}")
        if self.kind == "rl":   # no episodes, no supervised inner loop: RL settings come from each run
            return
        if self.steps is None:
            self.steps = self.config(self.reference).inner_steps_test
        if self.lr is None:
            self.lr = self.config(self.reference).mean_loss_inner_lr()
        self.steps, self.lr = int(self.steps), float(self.lr)

    @property
    def kind(self) -> str:
        """``"supervised"`` or ``"rl"``: the kind of every checkpoint of this context."""
        return next(iter(self.networks.values())).kind

    # typed access ----------------------------------------------------------------------------
    def rl_checkpoint(self, label: str):
        """Network ``label``, an RL :class:`repana.meta.checkpoint.Checkpoint` (InputError for a supervised one)."""
        checkpoint = self.networks[label]
        if checkpoint.kind != "rl":
            raise InputError(f"network {label!r} is a supervised checkpoint; this analysis reads RL checkpoints")
        return checkpoint

    def config(self, label: str) -> "TrainConfig":
        """The resolved training config of network ``label``."""
        return self.networks[label].train_config()

    def algorithm(self, label: str) -> str:
        """Canonical training algorithm of network ``label`` (aliases resolved: pretrain -> multiclass)."""
        from repana.meta.algorithms import ALIASES

        name = self.networks[label].algorithm
        return ALIASES.get(name, name)

    def model(self, label: str):
        """Network ``label`` in eval mode (built once)."""
        if label not in self._models:
            self._models[label] = self.networks[label].model()
        return self._models[label]

    def trainable(self, label: str):
        """What adapts at test time for network ``label``: its algorithm's rule under its training config
        (batch norm left out when the run's ``bn_inner_loop`` is false), :func:`repana.meta.train.eval_trainable`."""
        from repana.meta.train import eval_trainable

        return eval_trainable(self.config(label))

    def with_settings(self, settings: dict, episode_offset: int,
                      networks: tuple[str, ...] | None = None) -> "AnalysisContext":
        """The same data and models with another analysis's settings (and a subset of the networks,
        keeping the reference run's inner loop)."""
        chosen = self.networks if networks is None else {label: self.networks[label] for label in networks}
        if self.kind == "rl":
            return AnalysisContext(networks=chosen, settings=settings, preset=self.preset,
                                   reference=self.reference if self.reference in chosen else next(iter(chosen)),
                                   seed=self.seed, episode_offset=episode_offset, extras=self.extras)
        self.splits()
        clone = AnalysisContext(networks=chosen, settings=settings, preset=self.preset,
                                reference=self.reference if self.reference in chosen else next(iter(chosen)),
                                steps=self.steps, lr=self.lr, data=self.data,
                                data_root=self.data_root, dataset=self.dataset, queries=self.queries,
                                seed=self.seed, episode_offset=episode_offset, extras=self.extras)
        clone._models = self._models
        clone.__dict__["reference_config"] = self.reference_config
        return clone

    # data -------------------------------------------------------------------------------------
    @cached_property
    def reference_config(self) -> "TrainConfig":
        return self.config(self.reference)

    def splits(self) -> dict:
        """The ``{"train", "val", "test"}`` datasets (loaded once, from the reference run's dataset)."""
        if self.data is None:
            from repana.data import load_splits

            config = self.reference_config
            dataset = self.dataset or config.dataset
            root = self.data_root or config.data_root or None
            self.data = load_splits(dataset, root=root)
        return self.data

    def episodes(self, count: int, offset: int = 0):
        """``count`` fixed test episodes (the reference run's ways and shots), seeded by this analysis."""
        from repana.data import fixed_episodes

        if count < 1:
            raise InputError(f"episodes = {count}: an analysis needs at least one test episode")
        config = self.reference_config
        return fixed_episodes(self.splits()["test"], n_episodes=int(count), ways=config.ways, shots=config.shots,
                              queries=self.queries, seed=self.seed + self.episode_offset + offset)

    def history(self, label: str) -> list["Checkpoint"]:
        """Step checkpoints (``step_XXXXXX.pt``) saved beside network ``label``'s checkpoint, by step."""
        from repana.meta.checkpoint import load_checkpoint
        from repana.meta.train import list_step_checkpoints

        path = self.networks[label].path
        if path is None:
            return [self.networks[label]]
        found = [load_checkpoint(p) for _, p in list_step_checkpoints(Path(path).parent)]
        return found or [self.networks[label]]

    def run_dir(self, label: str) -> Path | None:
        """The run folder of network ``label`` (``<run>/checkpoints/<file>.pt`` -> ``<run>``)."""
        path = self.networks[label].path
        return Path(path).parent.parent if path is not None else None

    def input_files(self, analysis: Analysis) -> list[Path]:
        """Checkpoint files whose content determines ``analysis``'s results (for the table cache)."""
        files = [Path(c.path) for c in self.networks.values() if c.path is not None]
        if analysis.uses_history:
            from repana.meta.train import list_step_checkpoints

            for path in list(files):
                files += [p for _, p in list_step_checkpoints(path.parent)]
        return sorted(set(files))
