"""report.md: the analyses' sections (tables, figures, findings with verdicts) under one header, and the
formatting helpers the sections share (markdown tables, percentages, figure links).

Published numbers (percent, ± 95% CI) of Raghu et al., ICLR 2020 (arXiv 1909.09157v2). Sources:
Table 2 (MAML vs ANIL) as quoted in the learn2learn ANIL tutorial; the MiniImageNet 5-way 1-shot
freezing row and training-regimes row as given in the repana issue; the NIL column and the speed-ups
are transcribed from memory of the paper and marked as such in the report (verify against the PDF).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from repana.io import atomic_write_text

PAPER = {
    "freezing": {"MiniImageNet-5way-1shot": [46.9, 46.5, 46.4, 46.3, 46.3]},
    "maml_anil": {  # Table 2
        "Omniglot-20way-1shot": {"MAML": "93.7 ± 0.7", "ANIL": "96.2 ± 0.5"},
        "Omniglot-20way-5shot": {"MAML": "96.4 ± 0.1", "ANIL": "98.0 ± 0.3"},
        "MiniImageNet-5way-1shot": {"MAML": "46.9 ± 0.2", "ANIL": "46.7 ± 0.4"},
        "MiniImageNet-5way-5shot": {"MAML": "63.1 ± 0.4", "ANIL": "61.5 ± 0.5"},
    },
    "nil": {  # Table 4, NIL column (recalled; verify)
        "Omniglot-20way-1shot": "96.7 ± 0.3", "Omniglot-20way-5shot": "98.0 ± 0.04",
        "MiniImageNet-5way-1shot": "48.0 ± 0.7", "MiniImageNet-5way-5shot": "62.2 ± 0.5",
    },
    "regimes": {  # Table 5, MiniImageNet 5-way 1-shot, NIL evaluation
        "maml": 48.4, "anil": 48.0, "multiclass": 39.7, "multitask": 26.5, "nil": 38.3, "random": 32.9,
    },
    "speedup": {"MiniImageNet-5way-1shot": {"train": 1.7, "inference": 4.1}},  # recalled; verify
}
# Two accuracies agree when they differ by at most this (fraction) or the sum of their CIs.
SMALL_ACCURACY_GAP = 0.03


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
    return f"![{caption}]({name}.png)\n\n*{caption}* ([PDF]({name}.pdf))\n"


def gap_within_tolerance(a: float, b: float, ci_a: float, ci_b: float) -> tuple[bool, float]:
    """Whether two accuracies (fractions) agree: |a - b| <= max(3 points, ci_a + ci_b); and the gap."""
    gap = abs(a - b)
    tolerance = max(SMALL_ACCURACY_GAP, np.nan_to_num(ci_a) + np.nan_to_num(ci_b))
    return gap <= tolerance, gap


def write_report(out: str | Path, sections: list, context: dict) -> Path:
    """Write ``<out>/report.md`` from the analyses' :class:`repana.analysis.registry.Section` s.

    ``context``: preset, dataset, ways, shots, queries, inner_steps_test, inner_lr, runs ({name:
    {algorithm, iterations, train_s}}), hidden, pooling, wall_clock_s, reused (analyses read back).
    Returns the report's path.
    """
    out = Path(out)
    findings = [finding for section in sections for finding in section.findings]
    runs = ", ".join(f"{name} ({spec['algorithm']}, {spec['iterations']} it., {spec.get('train_s', float('nan')):.0f} s)"
                     for name, spec in context["runs"].items())
    header = (f"# Rapid Learning or Feature Reuse? -- reproduction report\n\n"
              f"Preset **{context['preset']}** on **{context['dataset']}**, {context['ways']}-way {context['shots']}-shot, "
              f"Conv4 with {context['hidden']} filters ({context['pooling']} pooling); test-time inner loop "
              f"{context['inner_steps_test']} steps of lr {context['inner_lr']:g} (mean-loss convention); "
              f"analysis episodes with {context['queries']} query images per class. Training runs: {runs}. "
              f"Wall-clock of this invocation (training excluded when reused): {context['wall_clock_s'] / 60:.1f} min"
              + (f" (reused: {', '.join(context['reused'])})" if context.get("reused") else "") + ".\n\n"
              "Paper numbers are Raghu et al., ICLR 2020 (MiniImageNet / 20-way Omniglot, 60k iterations); the "
              "quick preset trains for minutes, on other data sizes, so compare trends, not digits. Timings "
              "depend on the machine and its load.\n\n## Summary of findings\n\n"
              + "\n".join(f"- {f}" for f in findings) + "\n\n")
    if context["preset"] == "quick":
        header += ("## Reading a quick-preset report\n\n"
                   "- The networks train for minutes (about 1000-1500 meta-iterations of 4 tasks) instead of the paper's "
                   "60000 of 32: MAML in particular is far from converged, so differences that depend on how well MAML "
                   "is trained (MAML vs ANIL accuracy, the regimes ranking) can differ from the paper's.\n"
                   "- A briefly trained MAML initialisation is tuned for the single inner step it was trained with; the "
                   "accuracy analyses therefore adapt with 1 step (the paper preset uses the checkpoint's "
                   "`inner_steps_test`), while the inner-loop analysis follows 3 steps to show how the body drifts "
                   "beyond the trained step.\n"
                   "- Timings were measured on whatever else the machine was doing; ratios measured back to back "
                   "(same process, same batch) are more reliable than absolute seconds.\n\n")
    numbered = [section.markdown().replace("## ", f"## {index}. ", 1) for index, section in enumerate(sections, 1)]
    path = out / "report.md"
    atomic_write_text(path, header + "\n".join(numbered))
    return path
