"""Table 2's RL rows: MAML vs ANIL average return before and after one adaptation step on held-out tasks.

Each RL checkpoint (repana.rl) is evaluated on held-out tasks: by default its own sample of ``tasks``
tasks (``halfcheetah_tasks`` for HalfCheetah) from the task distribution, drawn from a stream derived from
its run's seed that no training run draws from (:func:`repana.rl.evaluate.evaluation_tasks`); with
``task_seed`` an integer, every checkpoint on the same tasks of that seed. The policy adapts with its own
inner loop (one policy-gradient step of its run's ``inner_lr`` on its run's ``fast_batch_size``
trajectories) and is rolled out again. Per run: the mean return over tasks and its 95% t-interval, the
task source (``eval_tasks``) and, for 2-D navigation, the sample's mean goal distance; per (environment,
algorithm): mean ± standard deviation over seeds (the paper's ±), beside the paper's numbers
(:mod:`repana.analysis.paper_values`), with the verdict on the MAML-vs-ANIL gap as the paper states it
(:func:`paper_values.verdict_anil_matches_maml_rl`).

HalfCheetah returns are not comparable with the paper's absolute numbers (MuJoCo 1.5 and rllab's cheetah
there, gymnasium's HalfCheetah-v5 on MuJoCo 3 here): only the gap between MAML and ANIL is compared.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from repana.analysis.registry import NO_VERDICT, Analysis, Finding, Section, register
from repana.errors import ConfigError

NAME = "rl_returns"
SUMMARY = f"{NAME}_table2"
PER_RUN_COLUMNS = ["label", "env", "algorithm", "seed", "iteration", "adapt_log_std", "n_tasks", "eval_tasks",
                   "mean_goal_distance", "return_before", "return_before_ci95", "return_after", "return_after_ci95",
                   "improvement", "improvement_ci95"]
#: ``task_seed`` setting: each run on its own task sample (anything else: an integer seed of fixed tasks).
PER_RUN = "per-run"
NAVIGATION_NOTE = (
    "**2-D navigation against the paper.** One MAML policy (seed 0, 20 meta-updates of the paper's size; "
    "`benchmarks/rl_eval_tasks.py`, docs/rl.md) returns -14.97 ± 1.68 after adaptation on the fixed 40 goals of "
    "seed 2**20 (95% CI over tasks) and -16.24 ± 0.19 on per-seed samples of 400 goals (mean ± std over 6 "
    "samples): the fixed goals sit closer (mean distance 0.358, 4 of 40 beyond 0.5; the distribution's mean is "
    "(sqrt 2 + ln(1 + sqrt 2)) / 6 = 0.383 with 1 - pi/4 = 21.5% beyond 0.5), and the return after adaptation "
    "is flat (-13 to -15) up to distance 0.5 but -21 at 0.5-0.6 and -28 at 0.6-0.7, so the fixed goals flatter "
    "by 1.3 (1.2 of it their distances). The per-seed number matches the run's own training-time return after "
    "adaptation (-15.8 to -16.7 over its last 3 updates). **Where we agree:** ANIL matches MAML in the "
    "3-seed reproduction (results/rl: -13.82 vs -13.95 after 40 meta-updates), as the paper says; both "
    "algorithms meet tasks drawn the same way, so the protocol does not tilt that comparison. **Where not:** "
    "moving the fixed-goal results (-13.95 / -13.82 at 40 meta-updates) by the same 1.3 leaves about "
    "-15.2 / -15.1, still about 5 above the paper's -20.3 / -20.1, and the seed spread stays small: task "
    "sampling moves a 400-task mean by 0.19, far below the paper's 3.2 / 2.3. **Why:** the goal sample "
    "explains 1.3 of the 6.3 gap (a fifth); the training budget (40 of the paper's 500 updates) does not "
    "explain a higher return (the return after adaptation rises with training), and the rest is not "
    "explained here: the paper's text does not state its evaluation tasks, trajectories or seeds.")
HALFCHEETAH_NOTE = ("HalfCheetah returns are **not comparable** with the paper's absolute numbers: the paper ran "
                    "rllab's cheetah on MuJoCo 1.5, repana runs gymnasium's HalfCheetah-v5 on MuJoCo 3 (another "
                    "model, observation and contact details); compare the MAML-vs-ANIL gap, not the digits.")


def tasks_for(env: str, settings: dict) -> int:
    """Held-out tasks per run in ``env``: ``halfcheetah_tasks`` for HalfCheetah when set, else ``tasks``."""
    if env.startswith("halfcheetah") and "halfcheetah_tasks" in settings:
        return int(settings["halfcheetah_tasks"])
    return int(settings["tasks"])


def fixed_task_seed(settings: dict) -> int | None:
    """The ``task_seed`` setting as a seed of fixed tasks, or None for each run's own sample (``"per-run"``)."""
    value = settings.get("task_seed", PER_RUN)
    if value == PER_RUN:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"rl_returns setting task_seed must be \"{PER_RUN}\" (each run's own tasks) or a seed "
                          f">= 0 (the same fixed tasks for every run), got {value!r}")
    return value


def per_run_returns(checkpoints: dict, settings: dict) -> pd.DataFrame:
    """One row per RL checkpoint (``checkpoints``: label -> RL :class:`repana.meta.checkpoint.Checkpoint`):
    :data:`PER_RUN_COLUMNS`; returns are undiscounted, averaged over each task's trajectories, then mean
    and 95% CI half width over the held-out tasks (:func:`tasks_for`, :func:`fixed_task_seed`)."""
    from repana.rl.evaluate import evaluate_rl

    rows = []
    for label, checkpoint in checkpoints.items():
        _, summary = evaluate_rl(checkpoint, n_tasks=tasks_for(checkpoint.env, settings),
                                 task_seed=fixed_task_seed(settings))
        rows.append({"label": label, **summary})
    return pd.DataFrame(rows)[PER_RUN_COLUMNS]


def table2(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per (env, algorithm): ``n_seeds``, ``iterations`` (meta-updates, the most of any seed), mean and
    std over seeds (ddof 1; NaN for one seed) of the returns before / after adaptation, the mean task CI of
    the return after, and Table 2's ``paper_printed`` / ``paper_mean`` / ``paper_std`` (NaN for algorithms
    the paper did not run, e.g. fomaml)."""
    from repana.analysis import paper_values

    grouped = per_run.groupby(["env", "algorithm"], sort=False)
    table = grouped.agg(n_seeds=("seed", "nunique"), iterations=("iteration", "max"),
                        return_before=("return_before", "mean"), return_before_std=("return_before", "std"),
                        return_after=("return_after", "mean"), return_after_std=("return_after", "std"),
                        return_after_ci95=("return_after_ci95", "mean")).reset_index()
    printed, means, stds = [], [], []
    for env, algorithm in zip(table["env"], table["algorithm"]):
        cell = paper_values.rl_cells(env).get(algorithm.upper())
        printed.append(cell.printed if cell else "")
        means.append(cell.value if cell else np.nan)
        stds.append(cell.spread if cell else np.nan)
    table["paper_printed"], table["paper_mean"], table["paper_std"] = printed, means, stds
    return table


def spread(row) -> float:
    """The spread a cell is judged by (:func:`repana.analysis.paper_values.mean_ci95_half_width`): the 95% CI
    half-width of the mean return over seeds with 2+ seeds, else the task CI of the one run."""
    from repana.analysis.report import judged_cell

    return judged_cell(row, "return_after", "return_after_ci95", scale=1.0)[1]


def compute(context) -> dict[str, pd.DataFrame]:
    checkpoints = {label: context.rl_checkpoint(label) for label in context.networks}
    per_run = per_run_returns(checkpoints, context.settings)
    return {NAME: per_run, SUMMARY: table2(per_run)}


def protocol_text(per_run: pd.DataFrame) -> str:
    """The held-out tasks of a per-run table in words: each run's own sample, or one fixed set for all."""
    from repana.rl.evaluate import EVAL_SEED

    counts = "/".join(str(n) for n in dict.fromkeys(int(n) for n in per_run["n_tasks"]))
    sources = per_run["eval_tasks"].astype(str) if "eval_tasks" in per_run else pd.Series(["fixed"] * len(per_run))
    if sources.str.startswith("per-seed").all():
        return (f"{counts} held-out tasks per run, each run's own sample from the task distribution (drawn from "
                f"SeedSequence(run seed, spawn_key=({EVAL_SEED},)), a stream no training run draws from)")
    named = ", ".join(dict.fromkeys(s for s in sources if s != "fixed")) or "one seed"
    return f"{counts} held-out tasks, the same tasks for every run ({named})"


def _fmt(mean: float, std: float, n: int) -> str:
    return f"{mean:.2f} ± {std:.2f}" if n > 1 and np.isfinite(std) else f"{mean:.2f}"


def report(tables, context) -> Section:
    from repana.analysis import paper_values
    from repana.analysis.report import figure_markdown, markdown_table

    summary = tables[SUMMARY]
    per_run = tables[NAME]
    view = pd.DataFrame({
        "environment": summary["env"], "algorithm": summary["algorithm"].str.upper(),
        "seeds": summary["n_seeds"], "meta-updates": summary["iterations"],
        "before adaptation": [_fmt(r.return_before, r.return_before_std, r.n_seeds) for r in summary.itertuples()],
        "after adaptation": [_fmt(r.return_after, r.return_after_std, r.n_seeds) for r in summary.itertuples()],
        "task CI (after)": [f"± {r.return_after_ci95:.1f}" for r in summary.itertuples()],
        "paper (after, 500 updates)": [p or "-" for p in summary["paper_printed"]]})
    seeds = per_run.assign(algorithm=per_run["algorithm"].str.upper()).groupby(["env", "algorithm"], sort=False)
    per_seed = "; ".join(f"{env} {algorithm}: " + ", ".join(f"{v:.2f}" for v in group["return_after"])
                         for (env, algorithm), group in seeds)
    body = (f"Average return (undiscounted, mean over each task's trajectories) on {protocol_text(per_run)}, "
            "before and after one adaptation step; ours: mean ± std over seeds (the paper's ±), with the mean 95% "
            "CI over tasks beside it. The paper's numbers are after 500 meta-updates of its setting; see the "
            "meta-updates column for ours.\n\n"
            + markdown_table(view) + f"\n\nAfter adaptation, per seed: {per_seed}.\n")
    if (summary["env"] == "2d-navigation").any():
        body += "\n" + NAVIGATION_NOTE + "\n"
    if summary["env"].str.startswith("halfcheetah").any():
        body += "\n" + HALFCHEETAH_NOTE + "\n"
    body += "\n" + figure_markdown(NAME, "Return before and after adaptation (bars: mean over seeds, error bars "
                                         "std over seeds); black ticks: the paper's return after adaptation") + "\n"
    findings = []
    cells = {}
    for env, group in summary.groupby("env", sort=False):
        rows = {row["algorithm"].upper(): row for _, row in group.iterrows()}
        if "MAML" in rows and "ANIL" in rows:
            cells[env] = {name: (float(rows[name]["return_after"]), spread(rows[name])) for name in ("MAML", "ANIL")}
    if cells:
        paper = {env: paper_values.rl_cells(env) for env in cells if env in paper_values.RL_ENVS}
        findings.append(Finding.judged(
            paper_values.verdict_anil_matches_maml_rl(cells),
            prefix="ANIL matches MAML in RL (average return after adaptation): ",
            claim="ANIL's average return after adaptation is comparable to MAML's", location="Table 2 (RL rows); Section 4",
            paper="; ".join(f"{env}: ANIL {c['ANIL'].value:.1f}, MAML {c['MAML'].value:.1f}" for env, c in paper.items())
            or "- (no such environment in the paper)",
            ours="; ".join(f"{env}: ANIL {c['ANIL'][0]:.1f}, MAML {c['MAML'][0]:.1f}" for env, c in cells.items())))
    else:
        findings.append(Finding("MAML vs ANIL: not judged (the checkpoints do not hold both algorithms of one "
                                "environment)", NO_VERDICT))
    improved = [f"{r.env} {r.algorithm}: {r.return_after - r.return_before:+.1f}" for r in summary.itertuples()]
    findings.append(Finding("Change of the return through adaptation (after - before, mean over seeds): "
                            + "; ".join(improved), NO_VERDICT))
    return Section("RL: MAML vs ANIL average return (paper Table 2, RL rows)", body, tuple(findings))


def figures(tables, context) -> dict:
    from repana.plots.paper import rl_returns_figure

    return {NAME: lambda: rl_returns_figure(tables[SUMMARY])}


ANALYSIS = register(Analysis(
    name=NAME, title="RL: MAML vs ANIL average return", reference="Table 2 (RL rows)", networks=("maml", "anil"),
    n_checkpoints=(1, None), compute=compute, report=report, figures=figures, across_seeds=True,
    summary_table=SUMMARY, kind="rl"))
