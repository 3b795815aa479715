"""A reproduction's training as a plan of independent jobs: one ``repana train`` command per run folder.

A :class:`Job` is one network to train: its resolved config (a supervised
:class:`~repana.meta.config.TrainConfig` or an RL :class:`~repana.rl.config.RLConfig`; ``Job.kind`` says
which), its run folder and the device it trains on. ``repana train --config`` dispatches on the config's
kind, so every engine runs both kinds the same way. Jobs do not depend on each other, so any engine can run them:
:func:`repana.runs.executors.run_jobs` (local worker processes or Ray tasks), GNU parallel or a SLURM
array over the files :func:`write_plan` writes::

    <plan_dir>/plan.jsonl     one JSON object per job (name, run_dir, config_path, device, command, config)
    <plan_dir>/commands.sh    one line per job: skip if its final checkpoint exists, else ``repana train``
    <plan_dir>/slurm.sh       an array job whose task i runs line i+1 of commands.sh
    <plan_dir>/configs/<setting>/<network>/seed<k>.toml   each job's config (``repana train --config``)

(Run folders may be deleted to retrain a job: the plan does not keep anything in them.) The executors
of :mod:`repana.runs.executors` write the config to ``<run_dir>/job.toml`` instead. A job's command is
``repana train --config <config> --out <run_dir> --resume --device D``:
``--resume`` continues an interrupted run from its newest checkpoint and starts a new one from scratch
(``repana train`` does both when the folder has no checkpoint), so running a command twice is safe.

Seeds (:func:`expand_jobs`): seed ``k`` of a network trains with ``config.seed + k * SEED_STRIDE``. The
base configs already carry one offset per network (``RUN_SEED_OFFSETS`` of
:mod:`repana.analysis.reproduce`: maml 0, anil 1, ..., random body 5, boil 6), so with a stride larger than every
offset no two networks or seeds share an initialisation, and seed 0 keeps today's seeds.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from repana.errors import ConfigError
from repana.limits import MAX_SEEDS
from repana.io import atomic_write_text
from repana.meta.config import TrainConfig, load_toml
from repana.rl.config import RLConfig
from repana.runs.kinds import RunKind, kind_of_config, kind_of_values

# Seed k of a network: base seed (which includes the network's offset) + k * SEED_STRIDE. Larger than
# every per-network offset of repana.analysis.reproduce (0..6), so seeds never collide.
SEED_STRIDE = 1000
JOB_CONFIG_FILE = "job.toml"
PLAN_FILE = "plan.jsonl"
COMMANDS_FILE = "commands.sh"
SLURM_FILE = "slurm.sh"
# Few-shot settings the paper reports, per dataset: (ways, shots). Glyphs stands in for Omniglot.
SETTINGS: dict[str, tuple[tuple[int, int], ...]] = {
    "omniglot": ((5, 1), (5, 5), (20, 1), (20, 5)),
    "glyphs": ((5, 1), (5, 5), (20, 1), (20, 5)),
    "miniimagenet": ((5, 1), (5, 5)),
}
RL_SETTING_PREFIX = "rl-"   # an RL job's setting: "rl-<env>", e.g. "rl-2d-navigation"
_SETTING = re.compile(r"^(?:(?P<dataset>[a-z]+)-)?(?P<ways>\d+)way-(?P<shots>\d+)shot$")


@dataclass(frozen=True)
class Job:
    """One training run of a plan.

    ``name``: ``<setting>/<network>/seed<k>`` (also a supervised config's ``name``; RL jobs' setting is
    ``rl-<env>``); ``config``: a :class:`TrainConfig` or an :class:`RLConfig`; ``run_dir``: its run folder
    (config.toml, metrics.csv, checkpoints/ as written by ``repana train``); ``device``: ``cpu``,
    ``cuda`` or ``cuda:N`` (RL jobs: ``cpu``).
    """

    name: str
    config: TrainConfig | RLConfig
    run_dir: Path
    device: str = "cpu"

    @property
    def run_kind(self) -> RunKind:
        """The job's :class:`repana.runs.kinds.RunKind` (from its config's type)."""
        return kind_of_config(self.config)

    @property
    def kind(self) -> str:
        """``"rl"`` for an RLConfig, else ``"supervised"`` (the kind of checkpoint it writes)."""
        return self.run_kind.name

    @property
    def config_path(self) -> Path:
        """The TOML file the executors' command reads (written by :func:`write_job_config`)."""
        return self.run_dir / JOB_CONFIG_FILE

    @property
    def setting(self) -> str:
        """The setting part of the name (``5way-1shot``)."""
        return self.name.split("/")[0]

    @property
    def network(self) -> str:
        """The network part of the name (``maml``)."""
        return self.name.split("/")[1] if self.name.count("/") >= 2 else self.name

    @property
    def seed_index(self) -> int:
        """k of ``seed<k>`` (0 when the name has no seed part)."""
        last = self.name.rsplit("/", 1)[-1]
        return int(last[4:]) if last.startswith("seed") and last[4:].isdigit() else 0

    def plan_config_path(self, plan_dir: str | Path) -> Path:
        """Where :func:`write_plan` puts the job's config: ``<plan_dir>/configs/<name>.toml``."""
        return Path(plan_dir) / "configs" / f"{self.name}.toml"

    @property
    def final_checkpoint(self) -> Path:
        """The checkpoint whose existence means the job is done (``step_<iterations>.pt``: supervised
        training keeps it, RL training writes it beside ``latest.pt`` when the last update is done)."""
        return self.run_dir / "checkpoints" / f"step_{self.config.iterations:06d}.pt"

    def command(self, program: Sequence[str] = ("repana",), threads: int | None = None,
                config_path: str | Path | None = None) -> list[str]:
        """The ``repana train`` argument list of this job; ``threads`` overrides the config's torch threads;
        ``config_path``: the config file it reads (default :attr:`config_path`)."""
        args = [*program, "train", "--config", str(config_path or self.config_path), "--out", str(self.run_dir),
                "--resume", "--device", self.device]
        if threads is not None:
            args += ["--set", f"threads={int(threads)}"]
        return args

    def shell_command(self, config_path: str | Path | None = None) -> str:
        """One shell line: nothing when the final checkpoint exists, else the job's ``repana train``."""
        return (f"[ -e {shlex.quote(str(self.final_checkpoint))} ] || "
                + " ".join(shlex.quote(part) for part in self.command(config_path=config_path)))

    def to_dict(self, config_path: str | Path | None = None) -> dict:
        config_path = config_path or self.config_path
        return {"name": self.name, "kind": self.kind, "run_dir": str(self.run_dir),
                "config_path": str(config_path), "device": self.device,
                "command": " ".join(shlex.quote(p) for p in self.command(config_path=config_path)),
                "config": self.config.to_dict()}

    @classmethod
    def from_dict(cls, values: Mapping, source: str = "plan") -> "Job":
        try:
            config = values["config"]
            config = kind_of_values(config).config_from_dict(config, f"{source}: {values['name']}")
            return cls(name=values["name"], config=config, run_dir=Path(values["run_dir"]),
                       device=values.get("device", "cpu"))
        except KeyError as missing:
            raise ConfigError(f"{source}: a job lacks the key {missing}; rewrite the plan with "
                              "`repana reproduce --plan`") from None


# ----- settings and seeds -----

def parse_setting(setting: str, dataset: str) -> tuple[str, int, int]:
    """``"5way-1shot"`` or ``"omniglot-5way-1shot"`` -> ``("5way-1shot", 5, 1)`` for ``dataset``.

    Raises ConfigError naming the settings that exist for the dataset.
    """
    valid = SETTINGS.get(dataset)
    if valid is None:
        raise ConfigError(f"dataset {dataset!r} has no few-shot settings; use one of {', '.join(SETTINGS)}")
    names = [f"{w}way-{k}shot" for w, k in valid]
    match = _SETTING.match(str(setting).strip().lower())
    family = "omniglot" if dataset == "glyphs" else dataset
    if match and match["dataset"] in (None, dataset, family):
        ways, shots = int(match["ways"]), int(match["shots"])
        if (ways, shots) in valid:
            return f"{ways}way-{shots}shot", ways, shots
    raise ConfigError(f"unknown setting {setting!r} for {dataset}: choose from {', '.join(names)}")


def seed_for(base_seed: int, seed_index: int) -> int:
    """The training seed of seed number ``seed_index`` (0-based) of a network whose base seed is given."""
    return int(base_seed) + int(seed_index) * SEED_STRIDE


def config_toml(config: TrainConfig | RLConfig) -> str:
    """A job's config as the TOML text ``repana train --config`` reads (either kind)."""
    return kind_of_config(config).config_toml(config)


def _check_seed_offsets(base_configs: Mapping) -> None:
    """ConfigError when two networks' base seeds are equal modulo SEED_STRIDE (they would share seeds)."""
    offsets: dict[int, str] = {}
    for network, config in base_configs.items():
        if "/" in network or not network:
            raise ConfigError(f"network name {network!r} must be a non-empty name without '/'")
        if config.seed < 0:
            raise ConfigError(f"{network}: seed {config.seed} must not be negative")
        other = offsets.setdefault(config.seed % SEED_STRIDE, network)
        if other != network:
            raise ConfigError(f"networks {other!r} and {network!r} would share seeds (base seeds equal modulo "
                              f"{SEED_STRIDE}): give each network its own seed offset below {SEED_STRIDE} "
                              "(networks compared with each other must not share their initialisation)")


def _check_seeds(seeds) -> None:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"seeds = {seeds!r}: train at least 1 seed per network (the paper uses 3)")
    if seeds > MAX_SEEDS:
        raise ConfigError(f"seeds = {seeds} is above the limit of {MAX_SEEDS} per network (the paper uses 3); "
                          "see repana/limits.py")


def expand_rl_jobs(base_configs: Mapping[str, Mapping[str, RLConfig]], seeds: int, runs_dir: str | Path = "runs"
                   ) -> list[Job]:
    """Every (environment, network, seed) RL job: ``<runs_dir>/rl-<env>/<network>/seed<k>``.

    ``base_configs``: environment -> {network name (``maml``, ``anil``...) -> its RLConfig with its own
    base seed}; seed ``k`` trains with ``seed + k * SEED_STRIDE`` (as :func:`expand_jobs`). RL jobs run on
    the CPU.
    """
    _check_seeds(seeds)
    if not base_configs or not any(base_configs.values()):
        raise ConfigError("no RL network to train: the plan's base configs are empty")
    runs_dir = Path(runs_dir)
    jobs = []
    for env, networks in base_configs.items():
        _check_seed_offsets(networks)
        setting = f"{RL_SETTING_PREFIX}{env}"
        for network, config in networks.items():
            if config.env != env:
                raise ConfigError(f"{setting}/{network}: its config trains on {config.env!r}, not {env!r}")
            for k in range(seeds):
                name = f"{setting}/{network}/seed{k}"
                jobs.append(Job(name=name, config=config.replace(seed=seed_for(config.seed, k)),
                                run_dir=runs_dir / setting / network / f"seed{k}", device="cpu"))
    return jobs


def expand_jobs(base_configs: Mapping[str, TrainConfig], seeds: int, settings: Iterable[str],
                runs_dir: str | Path = "runs", device: str = "cpu") -> list[Job]:
    """Every (setting, network, seed) job: ``<runs_dir>/<setting>/<network>/seed<k>``.

    ``base_configs``: network name (``maml``, ``anil``, ``multiclass``...) -> its TrainConfig, each with
    its own seed (as :func:`repana.analysis.reproduce.training_plan` gives them). ``settings``: names
    such as ``"5way-1shot"`` (see :data:`SETTINGS`); each sets ``ways`` and ``shots``. ``seeds``: how
    many seeds per network (the paper: 3). Raises ConfigError on ``seeds < 1``, an unknown setting, or two
    networks whose seeds would coincide.
    """
    _check_seeds(seeds)
    settings = list(settings)
    if not settings:
        raise ConfigError("no setting given: choose at least one, e.g. 5way-1shot")
    if not base_configs:
        raise ConfigError("no network to train: the plan's base configs are empty")
    _check_seed_offsets(base_configs)
    runs_dir = Path(runs_dir)
    jobs, seen = [], set()
    for setting in settings:
        datasets = {config.dataset for config in base_configs.values()}
        parsed = {dataset: parse_setting(setting, dataset) for dataset in sorted(datasets)}
        for network, config in base_configs.items():
            label, ways, shots = parsed[config.dataset]
            for k in range(seeds):
                name = f"{label}/{network}/seed{k}"
                if name in seen:
                    raise ConfigError(f"setting {setting!r} is given twice")
                seen.add(name)
                job_config = config.replace(name=name, ways=ways, shots=shots, seed=seed_for(config.seed, k))
                jobs.append(Job(name=name, config=job_config, run_dir=runs_dir / label / network / f"seed{k}",
                                device=device))
    return jobs


# ----- state of a job's run folder -----

def saved_config_differences(job: Job) -> list[str]:
    """``key = wanted (run has saved)`` for every setting of the job that its existing run folder was
    trained with differently (keys that may change on resume excepted; an RL run's former key names,
    :data:`repana.rl.config.RENAMED_KEYS`, read as the current ones); ``[]`` when none or no run yet."""
    saved_path = job.run_dir / "config.toml"
    if not saved_path.exists():
        return []
    kind = job.run_kind
    saved_values = kind.canonical_values(load_toml(saved_path))

    import dataclasses

    # a key the run's config.toml lacks was written before that setting existed: the run has its default
    defaults = {f.name: f.default for f in dataclasses.fields(job.config) if f.default is not dataclasses.MISSING}
    saved, wanted = {**defaults, **saved_values}, job.config.to_dict()
    return [f"{key} = {wanted[key]!r} (run has {saved.get(key)!r})" for key in sorted(wanted)
            if key not in kind.resumable_changes and key != "name" and saved.get(key) != wanted[key]]


def check_same_run(job: Job) -> None:
    """ConfigError when the job's run folder holds a run trained with other settings."""
    changed = saved_config_differences(job)
    if changed:
        raise ConfigError(f"{job.run_dir} was trained with other settings ({', '.join(changed)}): use another "
                          "runs folder or delete that run folder to retrain it")


def newest_checkpoint_step(job: Job) -> int | None:
    """The step of the newest ``step_*.pt`` in the job's run folder (RL: of ``latest.pt``; None when it
    has none)."""
    return job.run_kind.newest_step(job.run_dir)


def write_job_config(job: Job) -> Path:
    """Write the job's config to ``<run_dir>/job.toml`` (what its command reads); returns the path."""
    job.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(job.config_path, config_toml(job.config))
    return job.config_path


# ----- plan files -----

def write_plan(jobs: Sequence[Job], plan_dir: str | Path, cpus_per_job: int = 1) -> Path:
    """Write ``plan.jsonl``, ``commands.sh``, ``slurm.sh`` and ``configs/<job name>.toml`` into ``plan_dir``.

    Paths in the files are absolute so the scripts run from any folder (a shared file system on a
    cluster). ``cpus_per_job``: ``--cpus-per-task`` of the SLURM array (and its torch threads).
    Returns the path of ``plan.jsonl``.
    """
    jobs = [Job(j.name, j.config, j.run_dir.resolve(), j.device) for j in jobs]
    if not jobs:
        raise ConfigError("the plan has no job to write")
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ConfigError(f"the plan names a job twice: {sorted({n for n in names if names.count(n) > 1})}")
    plan_dir = Path(plan_dir).resolve()
    plan_dir.mkdir(parents=True, exist_ok=True)
    configs = [job.plan_config_path(plan_dir) for job in jobs]
    for job, path in zip(jobs, configs):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, config_toml(job.config))
    atomic_write_text(plan_dir / PLAN_FILE, "".join(json.dumps(job.to_dict(path)) + "\n"
                                                    for job, path in zip(jobs, configs)))
    header = ("# repana training plan: one job per line; a finished job (final checkpoint present) is skipped,\n"
              "# an interrupted one resumes. Run with GNU parallel, e.g.\n"
              f"#   OMP_NUM_THREADS=1 parallel -j $(nproc) < {shlex.quote(str(plan_dir / COMMANDS_FILE))}\n")
    atomic_write_text(plan_dir / COMMANDS_FILE, header + "".join(job.shell_command(path) + "\n"
                                                                 for job, path in zip(jobs, configs)))
    gpus = any(job.device.startswith("cuda") for job in jobs)
    slurm = "\n".join([
        "#!/bin/bash",
        "# repana training plan as a SLURM array: task i runs job i (line i+1 of the commands below).",
        f"# Submit: sbatch {shlex.quote(str(plan_dir / SLURM_FILE))}",
        "#SBATCH --job-name=repana-train",
        f"#SBATCH --array=0-{len(jobs) - 1}",
        f"#SBATCH --cpus-per-task={int(cpus_per_job)}",
        *(["#SBATCH --gres=gpu:1"] if gpus else []),
        f"#SBATCH --output={plan_dir}/slurm-%A_%a.log",
        "set -euo pipefail",
        'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
        f"commands={shlex.quote(str(plan_dir / COMMANDS_FILE))}",
        'line=$(grep -v "^#" "$commands" | sed -n "$((SLURM_ARRAY_TASK_ID + 1))p")',
        'echo "job $SLURM_ARRAY_TASK_ID: $line"',
        'eval "$line"',
        ""])
    atomic_write_text(plan_dir / SLURM_FILE, slurm)
    return plan_dir / PLAN_FILE


def read_plan(path: str | Path) -> list[Job]:
    """The jobs of a ``plan.jsonl`` (or of the folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / PLAN_FILE
    if not path.exists():
        raise ConfigError(f"plan {path} does not exist: write it first with `repana reproduce --plan`")
    jobs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}:{number} is not valid JSON ({error.msg})") from None
        jobs.append(Job.from_dict(values, source=f"{path}:{number}"))
    return jobs
