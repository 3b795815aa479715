"""report.md: a findings table first (each claim of the paper, where it is, the paper's value, ours, the
verdict and why when it does not agree), then the analyses' sections (tables, figures, findings); and the
formatting helpers the sections share (markdown tables, percentages, figure links, the cells the verdict
rules judge).

The paper's numbers and the verdict rules are in :mod:`repana.analysis.paper_values` (Raghu et al.,
ICLR 2020, https://openreview.net/forum?id=rkgMkCEtPB; docs/paper.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from repana.io import atomic_write_text

PERCENT = 100.0   # analyses' accuracies are fractions; the paper and its rules use percent


def pct(value: float, ci: float | None = None) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    text = f"{100 * value:.1f}"
    if ci is not None and np.isfinite(ci):
        text += f" ± {100 * ci:.1f}"
    return text


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a GitHub markdown table (no index)."""
    columns = list(frame.columns)
    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + " --- |" * len(columns)]
    for _, row in frame.iterrows():
        cells = []
        for value in row:
            if isinstance(value, float):
                cells.append("n/a" if not np.isfinite(value) else f"{value:.3g}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure_markdown(name: str, caption: str) -> str:
    """Markdown of figure ``name`` (PNG, with a link to the PDF), in the section's figures folder."""
    from repana.analysis.registry import FIGURES

    return f"![{caption}]({FIGURES}{name}.png)\n\n*{caption}* ([PDF]({FIGURES}{name}.pdf))\n"


def over_seeds(frame: pd.DataFrame, keys: list[str], value: str = "accuracy", ci: str = "ci95") -> pd.DataFrame:
    """Per ``keys``: ``value`` averaged over seeds, ``<value>_std`` its standard deviation over seeds (ddof=1,
    the paper's ± convention; NaN with one seed), ``n_seeds``, and ``ci`` the mean episode CI half-width.

    ``frame``: a table with a ``seed`` column (reproductions) or without (one network: one seed).
    Row order follows the first appearance of each key.
    """
    frame = frame if "seed" in frame else frame.assign(seed=0)
    grouped = frame.groupby(keys, sort=False, dropna=False)
    result = grouped[value].mean().rename(value).to_frame()
    result[f"{value}_std"] = grouped[value].std(ddof=1) if frame["seed"].nunique() > 1 else np.nan
    result["n_seeds"] = grouped["seed"].nunique()
    if ci in frame:
        result[ci] = grouped[ci].mean()
    return result.reset_index()


def judged_cell(row, value: str = "accuracy", ci: str = "ci95", scale: float = PERCENT) -> tuple[float, float]:
    """``(value, spread)`` of one row of :func:`over_seeds` for :mod:`repana.analysis.paper_values`'s rules.

    spread: the 95% CI half-width of the mean, as the rules define it
    (:func:`repana.analysis.paper_values.mean_ci95_half_width`: t quantile x std over seeds / sqrt(n) with
    2+ seeds, the run's episode CI with one). ``scale``: :data:`PERCENT` (default) turns an accuracy
    fraction into the paper's percent -- the one place where the unit changes; 1.0 keeps the unit
    (similarities, returns).
    """
    from repana.analysis.paper_values import mean_ci95_half_width

    std = row.get(f"{value}_std", np.nan)
    spread = mean_ci95_half_width(None if pd.isna(std) else float(std), int(row.get("n_seeds", 1)),
                                  None if pd.isna(row.get(ci, np.nan)) else float(row.get(ci)))
    return scale * float(row[value]), scale * spread


def pct_seeds(row, value: str = "accuracy", ci: str = "ci95") -> str:
    """``mean ± std`` over seeds (percent) and the mean episode CI, or ``mean ± CI`` for one seed."""
    mean, n = row[value], int(row.get("n_seeds", 1))
    if n > 1:
        return f"{pct(mean, row[f'{value}_std'])} (std, {n} seeds; episode CI ± {100 * row.get(ci, np.nan):.1f})"
    return f"{pct(mean, row.get(ci))} (95% CI, episodes)"


def for_figure(frame: pd.DataFrame, keys: list[str], value: str, ci: str = "ci95") -> pd.DataFrame:
    """:func:`over_seeds` with ``ci`` replaced by the std over seeds when there are several: the error
    bars of a figure then show the spread between random initialisations, as the paper's ± do."""
    summary = over_seeds(frame, keys, value, ci)
    several = summary["n_seeds"] > 1
    summary.loc[several, ci] = summary.loc[several, f"{value}_std"]
    return summary


def write_report(out: str | Path, sections: list, context: dict) -> Path:
    """Write ``<out>/report.md`` from the analyses' :class:`repana.analysis.registry.Section` s.

    ``context``: preset, seeds, wall_clock_s, and ``settings``: one dict per setting with setting, dataset,
    ways, shots, queries, inner_steps_test, inner_lr, hidden, pooling, runs ({run folder: {algorithm,
    iterations, train_s}}) and reused (analyses read back); or, for an RL reproduction, one dict per
    environment with kind "rl", setting, env, meta_batch_size, fast_batch_size, horizon, hidden_sizes,
    inner_lr, adapt_log_std, runs and reused. Returns the report's path.
    """
    rl = bool(context["settings"]) and all(facts.get("kind") == "rl" for facts in context["settings"])
    described = [_rl_setting_line(facts) if rl else _setting_line(facts) for facts in context["settings"]]
    seeds = context.get("seeds", 1)
    if rl:
        title = "Rapid Learning or Feature Reuse? -- reproduction report, reinforcement learning"
        scope = f"**{seeds} seed(s)** per algorithm and environment"
        conventions = (
            "Ours: mean ± standard deviation over seeds (the paper's convention for Table 2's ±), with the "
            "mean 95% confidence interval over held-out tasks beside it. Paper numbers are quoted from Raghu et "
            "al., ICLR 2020, Table 2 (docs/paper.md): MAML and ANIL after 500 meta-updates of Finn et al.'s "
            "setting. HalfCheetah returns are not comparable with the paper's absolute numbers (MuJoCo 1.5 and "
            "rllab's cheetah there, gymnasium's HalfCheetah-v5 on MuJoCo 3 here): compare the MAML-vs-ANIL gap. "
            "Timings depend on the machine and its load.")
        quick_notes = (
            "- The policies train for far fewer meta-updates than the paper's 500 (see each environment's "
            "line above; HalfCheetah also with smaller meta-batches), so returns are lower or higher than "
            "the paper's for that reason alone; the MAML-vs-ANIL comparison is within the same budget.\n"
            "- The paper preset (`repana reproduce --rl --preset paper`, or its `--plan` for a cluster) "
            "trains the paper's budget.\n")
    else:
        title = "Rapid Learning or Feature Reuse? -- reproduction report"
        scope = f"**{seeds} seed(s)** per network"
        conventions = (
            "Ours: mean ± standard deviation over seeds (the paper's convention for its ±, Section 4), with "
            "the mean 95% confidence interval over test episodes beside it; with one seed, ± is that episode CI. "
            "Paper numbers are quoted from Raghu et al., ICLR 2020, with their table and what their ± is "
            "(docs/paper.md). The paper trains 60000 iterations on MiniImageNet and 20-way Omniglot; compare "
            "trends, not digits, when the setting or budget differs. Timings depend on the machine and its load.")
        quick_notes = (
            "- The networks train for minutes (the budgets are in the setup line above and in the deviations "
            "below) instead of the paper's 60000 iterations of 32 tasks, on Conv4 with 32 filters, so differences "
            "that depend on how well each network is trained (MAML vs ANIL accuracy, the regimes ranking) can differ "
            "from the paper's; the learning curves show where training stood.\n"
            "- Test-time adaptation uses each run's own inner steps (the quick default network: 10, Table 1's "
            "protocol); the freezing analyses add the run's, the paper's and a converged step count, and the "
            "inner-loop analysis reports the representation after every step.\n"
            "- Timings were measured on whatever else the machine was doing; ratios measured back to back "
            "(same process, same batch) are more reliable than absolute seconds.\n")
    header = (f"# {title}\n\n## Findings\n\n{findings_table(sections)}\n\n"
              f"Preset **{context['preset']}**, {scope}. Each verdict applies the paper's claim as stated "
              "(`repana.analysis.paper_values`, docs/paper.md); its noise is the 95% CI half-width of each mean "
              "(over seeds with 2+ seeds, over test episodes with one). The sections below hold the tables, figures "
              "and every finding.\n\n## Setup\n\nWall-clock of this invocation (training excluded when reused): "
              f"{context['wall_clock_s'] / 60:.1f} min.\n\n" + "\n".join(described) + f"\n\n{conventions}\n\n")
    if context["preset"] == "quick":
        header += f"## Reading a quick-preset report\n\n{quick_notes}\n"
    if not rl:
        listed = [deviations_markdown(facts) for facts in context["settings"] if facts.get("config")]
        if listed:
            header += ("## Deviations from the paper and from Finn et al.'s code\n\nEvery setting of these runs that "
                       "differs from the paper's (its bundled preset, Finn et al.'s settings, which Raghu et al. keep), "
                       "with the reason:\n\n" + "\n\n".join(listed) + "\n\n")
    numbered = [section.markdown().replace("## ", f"## {index}. ", 1) for index, section in enumerate(sections, 1)]
    path = Path(out) / "report.md"
    atomic_write_text(path, header + "\n".join(numbered))
    return path


# Why a quick run may differ from the paper's preset in a setting (key of TrainConfig -> reason).
DEVIATION_REASONS = {
    "iterations": "minutes of CPU instead of the paper's 60000 meta-iterations; every learning curve is shown so the "
                  "reader can see where training stood",
    "meta_batch_size": "fewer tasks per meta-update to fit a CPU budget",
    "hidden": "a narrower Conv4, to fit a CPU budget (the feature-reuse map measures 32 and 64)",
    "pooling": "the network of the paper's table this run reproduces",
    "head_input": "Table 1's network shape (MiniImageNet's Conv4: conv4's map flattened before the head); Finn et al.'s "
                  "Omniglot network averages it over space. The feature-reuse map measures both: the answer depends on it",
    "inner_steps_test": "Table 1's test-time protocol (10 steps, MiniImageNet); the freezing analysis also reports the "
                        "run's and converged step counts",
    "inner_steps_train": "as Finn et al.'s network for this dataset",
    "queries_train": "5 query images per class in training against Finn et al.'s K (1 here): less noisy meta-gradients "
                     "from meta-batches of 4 tasks",
    "queries_test": "15 query images per class at test time (narrower episode CI; the same expected accuracy)",
    "bn_inner_loop": "batch-norm scale and offset adapt in the inner loop; in Finn et al.'s code they are learned in the "
                     "outer loop only",
    "inner_lr": "the same step in the mean-loss convention",
    "inner_loss": "the same step in the mean-loss convention",
    "split": "the dataset's default split (the shared Omniglot subset lacks the paper's split)",
    "dataset": "the data available here",
    "val_every": "validation schedule of a short run",
    "val_episodes": "validation episodes of a short run",
    "checkpoint_every": "checkpoint schedule of a short run",
    "keep_checkpoints": "checkpoint schedule of a short run",
    "save_steps": "Figure 3's checkpoints at 1/6, 1/3 and 1/2 of a short run",
    "test_episodes": "the analyses draw their own test episodes",
}
DEVIATION_SKIP = ("name", "seed", "data_root", "threads", "log_every", "ways", "shots", "algorithm", "batch_size",
                  "eval_method", "ci", "outer_lr")


def deviations_markdown(facts: dict) -> str:
    """The bullet list of one setting's deviations: each TrainConfig value of its reference run that differs from
    the paper's preset (``facts["config"]`` vs ``facts["paper_config"]``), then the budgets of every network and the
    data. Learning rates compare in the mean-loss convention."""
    ours, paper = dict(facts["config"]), dict(facts["paper_config"])
    for values in (ours, paper):
        values["inner_lr"] = values["inner_lr"] * (values["ways"] if values["inner_loss"] == "sum_over_shots" else 1)
        values["inner_loss"] = "mean"
    lines = []
    for key in sorted(set(ours) | set(paper)):
        if key in DEVIATION_SKIP or ours.get(key) == paper.get(key):
            continue
        reason = DEVIATION_REASONS.get(key, "a setting of the quick preset")
        lines.append(f"- `{key}`: {ours.get(key)!r} (paper: {paper.get(key)!r}): {reason}.")
    budgets = sorted({(spec["algorithm"], spec["iterations"]) for spec in facts.get("runs", {}).values()})
    if len({iterations for _, iterations in budgets}) > 1:
        lines.append("- Budgets differ between training regimes ("
                     + ", ".join(f"{algorithm} {iterations}" for algorithm, iterations in budgets)
                     + " meta-iterations); the learning-curve section says which curves had flattened by then. The "
                     "paper trains every regime 60000 iterations.")
    if facts.get("dataset") == "glyphs":
        lines.append("- Data: the procedural glyph set stands in for Omniglot (offline); the paper's Table 1 and "
                     "Figure 2 are on MiniImageNet.")
    elif facts.get("dataset") == "omniglot" and ours.get("split") in ("", "auto", "subset"):
        lines.append("- Data: the shared Omniglot subset (242 characters of 8 alphabets) instead of the 1623 characters.")
    return f"**{facts['setting']}**\n\n" + ("\n".join(lines) if lines else "- none")


FINDINGS_COLUMNS = ("setting", "claim", "where in the paper", "paper", "ours", "verdict", "why not")


def _cell_text(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def findings_table(sections: list) -> str:
    """One markdown row per finding with a claim, in section order: :data:`FINDINGS_COLUMNS` (the reason
    only where the verdict is not "agrees"). A report of one setting has no setting column; a finding of no
    setting (across settings) says "all"."""
    from repana.analysis.registry import AGREES

    rows = [(section.setting, finding) for section in sections for finding in section.findings if finding.claim]
    if not rows:
        return "No claim of the paper was judged (the analyses run judge none)."
    columns = FINDINGS_COLUMNS if len({setting for setting, _ in rows if setting}) > 1 else FINDINGS_COLUMNS[1:]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for setting, finding in rows:
        verdict = str(finding.verdict) if finding.verdict is AGREES else f"**{finding.verdict}**"
        cells = [finding.claim, finding.location, finding.paper, finding.ours, verdict,
                 "" if finding.verdict is AGREES else finding.reason]
        lines.append("| " + " | ".join(_cell_text(c) for c in ([setting or "all"] if len(columns) > 6 else []) + cells)
                     + " |")
    return "\n".join(lines)


def _reused(facts: dict) -> str:
    return f"; reused: {', '.join(sorted(set(facts['reused'])))}" if facts.get("reused") else ""


def _setting_line(facts: dict) -> str:
    """The report header's line for one supervised setting."""
    train_s = [spec.get("train_s", float("nan")) for spec in facts["runs"].values()]
    runs = ", ".join(sorted({f"{spec['algorithm']} {spec['iterations']} it." for spec in facts["runs"].values()}))
    return (f"- **{facts['setting']}**: Conv4 with {facts['hidden']} filters ({facts['pooling']} pooling); test-time "
            f"inner loop {facts['inner_steps_test']} steps of lr {facts['inner_lr']:g} (mean-loss convention); "
            f"analysis episodes with {facts['queries']} query images per class; {len(facts['runs'])} training runs "
            f"({runs}; {np.nansum(train_s) / 60:.1f} min of training in all)" + _reused(facts) + ".")


def _rl_setting_line(facts: dict) -> str:
    """The report header's line for one RL environment."""
    runs = facts["runs"].values()
    train_s = [spec.get("train_s", float("nan")) for spec in runs]
    budgets = ", ".join(sorted({f"{spec['algorithm']} {spec['iterations']} meta-updates" for spec in runs}))
    sizes = facts["hidden_sizes"]
    hidden = (f"{len(sizes)} x {sizes[0]}" if len(set(sizes)) == 1 else " + ".join(map(str, sizes)))
    return (f"- **{facts['setting']}**: Gaussian MLP policy ({hidden} hidden ReLU units, learned log-std"
            f"{', adapted in the inner loop' if facts['adapt_log_std'] else ', not adapted'}); per meta-update "
            f"{facts['meta_batch_size']} tasks x {facts['fast_batch_size']} trajectories of {facts['horizon']} steps "
            f"before and after one policy-gradient step of lr {facts['inner_lr']:g}, TRPO outer loop; "
            f"{len(facts['runs'])} training runs ({budgets}; {np.nansum(train_s) / 60:.1f} min of training in all)"
            + _reused(facts) + ".")
