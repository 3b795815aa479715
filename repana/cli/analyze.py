"""``repana analyze <analysis>``: run one of the paper's analyses on your own checkpoints.

    repana analyze inner_loop_similarity --checkpoint runs/maml/checkpoints/latest.pt --out results
    repana analyze freezing --checkpoint runs/maml/checkpoints/latest.pt --out results --episodes 600
    repana analyze maml_anil_similarity --checkpoint MAML.pt --checkpoint ANIL.pt --out results
    repana analyze maml_anil_nil --checkpoint MAML.pt --checkpoint ANIL.pt --out results
    repana analyze training_regimes --checkpoint A.pt --checkpoint B.pt ... --out results
    repana analyze head_needed --checkpoint ANIL.pt --checkpoint NIL_TRAINED.pt --out results
    repana analyze training_dynamics --checkpoint runs/maml/checkpoints/latest.pt --out results
    repana analyze convergence --checkpoint ANY.pt --out results   (its dataset and architecture)
    repana analyze rl_returns --checkpoint NAV_MAML.pt --checkpoint NAV_ANIL.pt --out results --episodes 40
    repana analyze rl_policy_similarity --checkpoint NAV_MAML.pt --checkpoint NAV_ANIL.pt --out results

Every analysis of ``repana reproduce`` (the same names, ``-`` or ``_``), with its settings from
``analyses/<name>.toml`` (``--preset``, default paper) unless overridden by the flags below. Each
``--checkpoint`` is labelled by its training algorithm, or ``LABEL=PATH``. Test episodes come from the
test split of the first checkpoint's dataset (``--dataset`` / ``--data-root`` override it), seeded, the
same for every network. The rl_* analyses read RL checkpoints (``repana train --preset rl-...``; ``--episodes``
is their number of held-out tasks) and the others supervised ones. Writes ``<out>/<analysis>*.csv`` and figures (PNG + PDF), and prints the summary.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from repana.analysis.registry import ANALYSIS_MODULES as ANALYSES   # stdlib-only module: --help stays fast
from repana.cli.checks import check_output_dir, check_seed
from repana.errors import InputError
from repana.limits import check_command_options
from repana.runtime import set_torch_threads


def register(subparsers, help_text: str) -> None:
    """Add the ``repana analyze`` parser to ``subparsers``, listed with ``help_text``."""
    parser = subparsers.add_parser("analyze", help=help_text,
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("analysis", metavar="ANALYSIS", help="one of: " + ", ".join(ANALYSES))
    parser.add_argument("--checkpoint", action="append", required=True, metavar="[LABEL=]PATH",
                        help="checkpoint file (repeat for analyses of several networks)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--preset", choices=("quick", "paper"), default="paper",
                        help="settings of analyses/<name>.toml to start from (default paper)")
    parser.add_argument("--episodes", type=int, help="test episodes, or held-out tasks of the rl_* analyses "
                                                     "(default: the preset's)")
    parser.add_argument("--queries", type=int, default=15, help="query images per class (default 15)")
    parser.add_argument("--measure", action="append", metavar="NAME",
                        help="similarity measure (repeatable; default: the preset's)")
    parser.add_argument("--steps", type=int, help="test-time inner steps (default: the checkpoint's)")
    parser.add_argument("--lr", type=float, help="test-time inner lr, mean-loss convention (default: the checkpoint's)")
    parser.add_argument("--dataset", help="dataset of the test episodes (default: the checkpoint's)")
    parser.add_argument("--data-root", metavar="DIR", help="data folder (default REPANA_DATA_ROOT)")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the test episodes")
    parser.add_argument("--iterations", type=int, help="convergence: meta-iterations per run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting of the analysis's TOML entry (TOML value, e.g. "
                             "inner_steps=[1,5] or speed_repeats=0; repeatable)")
    parser.set_defaults(func=run)


def _labelled(specs: list[str]) -> list[tuple[str | None, str]]:
    """``[LABEL=]PATH`` strings -> (label or None, path)."""
    pairs = []
    for spec in specs:
        label, sep, path = spec.partition("=")
        pairs.append((label, path) if sep and label and "/" not in label else (None, spec))
    return pairs


def _parse_settings(assignments: list[str], known: dict, name: str) -> dict:
    """``KEY=VALUE`` strings (:func:`repana.assignments.parse_assignment`) -> settings; unknown keys are an
    InputError."""
    from repana.assignments import parse_assignment

    parsed = {}
    for assignment in assignments:
        key, value = parse_assignment(assignment)
        if key not in known:
            raise InputError(f"--set {key}: analysis {name!r} has no setting {key!r}; its settings are "
                             f"{', '.join(sorted(known))}")
        parsed[key] = value
    return parsed


def run(args) -> int:
    import pandas as pd

    from repana.analysis.registry import (AnalysisContext, check_checkpoint_kind, get_analysis,
                                         load_analysis_checkpoint, load_settings)
    from repana.analysis.reproduce import compute_tables, write_tables_and_figures
    from repana.models import forward_macs

    check_output_dir(args.out, "--out")
    check_seed(args.seed)
    analysis = get_analysis(args.analysis)
    low, high = analysis.n_checkpoints
    given = len(args.checkpoint)
    if given < low or (high is not None and given > high):
        wanted = f"exactly {low}" if low == high else f"at least {low}" if high is None else f"{low} to {high}"
        raise InputError(f"analysis {analysis.name!r} takes {wanted} --checkpoint (got {given})")
    check_command_options(episodes=args.episodes, steps=args.steps, lr=args.lr, queries=args.queries)
    if analysis.kind == "rl":
        given = [f"--{flag.replace('_', '-')}" for flag in ("steps", "lr", "dataset", "data_root", "iterations")
                 if getattr(args, flag) is not None]
        if given:
            raise InputError(f"{', '.join(given)}: not used by the RL analysis {analysis.name!r} (each policy adapts "
                             "with its run's own inner loop; --episodes sets the held-out tasks)")
    networks = {}
    for label, path in _labelled(args.checkpoint):
        checkpoint = load_analysis_checkpoint(path)
        check_checkpoint_kind(analysis, checkpoint, path)
        label = label or checkpoint.algorithm
        while label in networks:
            label += "'"
        networks[label] = checkpoint
    settings = dict(load_settings(analysis.name, args.preset))
    # RL analyses: --episodes is the number of held-out tasks (in every environment)
    episodes_keys = [k for k in ("tasks", "halfcheetah_tasks") if k in settings] if analysis.kind == "rl" \
        else ["episodes"]
    for option, keys in (("episodes", episodes_keys), ("measure", ["measures"]), ("iterations", ["iterations"])):
        if getattr(args, option) is not None:
            settings.update({key: getattr(args, option) for key in keys})
    settings.update(_parse_settings(args.set, settings, analysis.name))
    context = AnalysisContext(networks=networks, settings=settings, preset=args.preset, steps=args.steps,
                              lr=args.lr, dataset=args.dataset, data_root=args.data_root, queries=args.queries,
                              seed=args.seed, episode_offset=analysis.episode_offset)
    first = next(iter(networks.values()))   # torch threads for its network and episodes (repana.runtime)
    if analysis.kind == "supervised":   # RL policies: torch's count, unchanged
        config = first.train_config()
        set_torch_threads(forward_macs(first.model_config, config.ways * (config.shots + config.queries_test)))
    tables = compute_tables(analysis, context)
    out = Path(args.out)
    write_tables_and_figures(analysis, tables, context, out, out)
    shown = tables[analysis.summary_table or analysis.name]
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(shown.to_string(index=False))
    for finding in analysis.report(tables, context).findings:
        print(f"- {finding}")
    print(f"wrote {', '.join(str(out / f'{table}.csv') for table in tables)}")
    return 0
