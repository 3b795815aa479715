"""report.md: the analyses' tables and figures beside the paper's published numbers, with a plain
statement of where they agree and where they do not.

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
# Thresholds of the verdicts (fractions of accuracy, similarity units).
NEAR_ONE = 0.9
CLEARLY_LOWER = 0.1
SMALL_ACCURACY_GAP = 0.03


def _pct(value: float, ci: float | None = None) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    text = f"{100 * value:.1f}"
    if ci is not None and np.isfinite(ci):
        text += f" ± {100 * ci:.1f}"
    return text


def _table(frame: pd.DataFrame) -> str:
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


def _figure(name: str, caption: str) -> str:
    return f"![{caption}]({name}.png)\n\n*{caption}* ([PDF]({name}.pdf))\n"


def _gap_verdict(a: float, b: float, ci_a: float, ci_b: float) -> tuple[bool, float]:
    gap = abs(a - b)
    tolerance = max(SMALL_ACCURACY_GAP, np.nan_to_num(ci_a) + np.nan_to_num(ci_b))
    return gap <= tolerance, gap


def inner_loop_section(summary: pd.DataFrame, step: int | None = None) -> tuple[str, list[str]]:
    if step is not None and step in set(summary["step"]):
        last = summary[summary["step"] == step]
    else:
        last = summary[summary["step"] == summary.groupby("label")["step"].transform("max")]
        step = None
    view = last[["label", "layer", "measure", "mean", "ci95", "null_mean", "n_datapoints", "n_features",
                 "reduction", "scope"]].rename(columns={"mean": "before vs after", "null_mean": "null baseline"})
    findings = []
    maml_all = summary[summary["label"] == "MAML"]
    steps = sorted({int(maml_all["step"].min()), int(maml_all["step"].max())}) if len(maml_all) else []
    for inner_step in steps:
        maml = maml_all[maml_all["step"] == inner_step]
        for measure, group in maml.groupby("measure"):
            values = dict(zip(group["layer"], group["mean"]))
            convs = [values.get(layer, np.nan) for layer in ("conv1", "conv2", "conv3")]
            head = values.get("head", np.nan)
            near_one = bool(np.all(np.asarray(convs) >= NEAR_ONE))
            lower = bool(np.isfinite(head) and head <= np.nanmin(convs) - CLEARLY_LOWER)
            verdict = "agrees" if near_one and lower else "does NOT agree"
            findings.append(
                f"MAML, {measure}, after {inner_step} inner step{'s' if inner_step > 1 else ''}: conv1-conv3 before/after "
                f"similarity {', '.join(f'{c:.3f}' for c in convs)} ({'all' if near_one else 'not all'} >= "
                f"{NEAR_ONE}); head {head:.3f} ({'clearly' if lower else 'not clearly'} lower). Paper: "
                f"conv1-conv3 ~1, head much lower -> **{verdict}**.")
    by_step = maml_all.pivot_table(index=["measure", "layer"], columns="step", values="mean").round(3)
    by_step.columns = [f"after step {c}" for c in by_step.columns]
    by_step = by_step.reset_index()
    text = ("## 1. Representational change in the inner loop (paper Fig. 2)\n\n"
            "Similarity of each layer's activations on the query images before vs after the test-time "
            f"inner loop ({f'after {step} inner step(s), as in the accuracy analyses' if step else 'last inner step'}), mean ± 95% CI over episodes (or pooled groups), beside the "
            "null baseline (one side's query datapoints shuffled). `n_datapoints` x `n_features` is what "
            "entered each measure; `reduction` how conv maps became 2-D.\n\n" + _table(view) + "\n\n"
            + _figure("inner_loop_similarity", "Before vs after the inner loop, per layer (dotted: null)")
            + "\nMAML, similarity to the representation before the inner loop after each inner step:\n\n"
            + (_table(by_step) if len(by_step) else "") + "\n\n"
            + _figure("inner_loop_steps", "Similarity to the initial representation after each step")
            + "\n" + "\n".join(f"- {f}" for f in findings) + "\n")
    return text, findings


def freezing_section(frame: pd.DataFrame, dataset_key: str) -> tuple[str, list[str]]:
    paper = PAPER["freezing"]["MiniImageNet-5way-1shot"]
    view = pd.DataFrame({"frozen conv blocks": frame["frozen"],
                         "ours (%)": [_pct(a, c) for a, c in zip(frame["accuracy"], frame["ci95"])],
                         "paper MiniImageNet 5w1s (%)": paper[:len(frame)]})
    none, every = frame.iloc[0], frame.iloc[-1]
    ok, gap = _gap_verdict(none["accuracy"], every["accuracy"], none["ci95"], every["ci95"])
    finding = (f"Freezing conv1-conv4 at test time changes accuracy by {100 * (every['accuracy'] - none['accuracy']):+.1f} "
               f"points ({_pct(none['accuracy'])} -> {_pct(every['accuracy'])}); paper: -0.6 points. "
               f"**{'agrees' if ok else 'does NOT agree'}** (tolerance: max(3 points, sum of CIs)).")
    return ("## 2. Freezing layers at test time (paper Table 1)\n\n" + _table(view) + "\n\n"
            + _figure("freezing", "Accuracy with conv blocks frozen at test time") + f"\n- {finding}\n"), [finding]


def _speed_finding(speed: pd.DataFrame) -> str:
    """ANIL's measured speed-ups beside the paper's, in the paper's step setting when it was measured."""
    anil = speed[speed["algorithm"] == "anil"]
    if "steps_of" in anil and (anil["steps_of"] == "paper").any():
        anil, setting = anil[anil["steps_of"] == "paper"], "with the paper's 5 training / 10 test steps"
    else:
        anil, setting = anil[anil["phase"] != "training_run"], "with this run's inner steps"
    ratio = anil.drop_duplicates("phase").set_index("phase")["speedup"]
    faster = ratio.get("train", 0) > 1 and ratio.get("inference", 0) > 1
    return (f"ANIL speed-up over MAML {setting}: training {ratio.get('train', np.nan):.2f}x, inference "
            f"{ratio.get('inference', np.nan):.2f}x (paper, MiniImageNet 5w1s, recalled: 1.7x and 4.1x) -> "
            f"**{'agrees' if faster else 'does NOT agree'}** that ANIL is faster.")


def comparison_section(frame: pd.DataFrame, speed: pd.DataFrame | None, dataset_key: str) -> tuple[str, list[str]]:
    rows = {r["label"]: r for _, r in frame.iterrows()}
    view = pd.DataFrame({"method": frame["label"], "evaluation": frame["method"],
                         "ours (%)": [_pct(a, c) for a, c in zip(frame["accuracy"], frame["ci95"])],
                         "s / episode": frame["seconds_per_episode"].map(lambda s: f"{s:.3f}")})
    paper_rows = pd.DataFrame([{"benchmark": k, "MAML": v["MAML"], "ANIL": v["ANIL"],
                                "NIL (recalled)": PAPER["nil"][k]} for k, v in PAPER["maml_anil"].items()])
    findings = []
    if "MAML" in rows and "ANIL" in rows:
        ok, gap = _gap_verdict(rows["MAML"]["accuracy"], rows["ANIL"]["accuracy"], rows["MAML"]["ci95"],
                               rows["ANIL"]["ci95"])
        findings.append(f"ANIL {_pct(rows['ANIL']['accuracy'])} vs MAML {_pct(rows['MAML']['accuracy'])} "
                        f"(gap {100 * gap:.1f} points); paper: ANIL matches MAML -> **{'agrees' if ok else 'does NOT agree'}**.")
    if "ANIL" in rows and "NIL (ANIL body)" in rows:
        nil = rows["NIL (ANIL body)"]
        ok, gap = _gap_verdict(nil["accuracy"], rows["ANIL"]["accuracy"], nil["ci95"], rows["ANIL"]["ci95"])
        findings.append(f"NIL {_pct(nil['accuracy'])} vs ANIL {_pct(rows['ANIL']['accuracy'])} (gap {100 * gap:.1f} "
                        f"points); paper: NIL matches or beats ANIL -> **{'agrees' if ok or nil['accuracy'] > rows['ANIL']['accuracy'] else 'does NOT agree'}**.")
    text = ("## 3. MAML vs ANIL vs NIL (paper Tables 2 and 4)\n\n" + _table(view) + "\n\nPaper:\n\n"
            + _table(paper_rows) + "\n\n" + _figure("comparison", "Accuracy on the same test episodes") + "\n")
    if speed is not None and len(speed):
        speed_view = speed.copy()
        speed_view["seconds"] = speed_view["seconds"].map(lambda s: f"{s:.4f}")
        speed_view["speedup"] = speed_view["speedup"].map(lambda s: f"{s:.2f}x")
        text += ("ANIL vs MAML cost, measured back to back in this run on this machine (`train`: one "
                 "meta-step on the same meta-batch; `inference`: one test episode; `training_run`: seconds "
                 "per iteration of the whole training runs, from their metrics.csv; `steps_of`: the inner "
                 "steps of this run, or the paper's 5 in training and 10 at test, with which its speed-ups "
                 "were measured):\n\n" + _table(speed_view) + "\n\n")
        findings.append(_speed_finding(speed))
    return text + "\n".join(f"- {f}" for f in findings) + "\n", findings


def cross_model_section(summary: pd.DataFrame) -> tuple[str, list[str]]:
    view = summary[["layer", "measure", "mean", "ci95", "null_mean", "n_datapoints", "n_features", "reduction"]]
    above = summary["mean"] - summary["null_mean"]
    finding = (f"MAML vs ANIL similarity per layer is {'above' if bool((above > 0.1).all()) else 'not everywhere above'} "
               f"its null baseline (smallest margin {np.nanmin(above):.3f}); paper: the two networks' "
               "representations are similar, especially in early layers.")
    return ("## 4. MAML and ANIL learn similar representations (paper Sec. 4.2)\n\n" + _table(view) + "\n\n"
            + _figure("maml_anil_similarity", "MAML vs ANIL, layer by layer") + f"\n- {finding}\n"), [finding]


def regimes_section(frame: pd.DataFrame, head: pd.DataFrame | None) -> tuple[str, list[str]]:
    view = pd.DataFrame({"training regime": frame["name"],
                         "ours, NIL eval (%)": [_pct(a, c) for a, c in zip(frame["accuracy"], frame["ci95"])],
                         "paper MiniImageNet 5w1s (%)": [PAPER["regimes"].get(r, "") for r in frame["regime"]]})
    accuracy = dict(zip(frame["regime"], frame["accuracy"]))
    meta = min(accuracy.get("maml", np.nan), accuracy.get("anil", np.nan))
    others = [accuracy[k] for k in ("multiclass", "multitask", "nil", "random") if k in accuracy]
    best = bool(others) and meta > max(others)
    findings = [f"Meta-learned bodies (MAML, ANIL) {'beat' if best else 'do NOT beat'} every other regime under "
                f"NIL evaluation (paper: 48.4 / 48.0 vs at most 39.7) -> **{'agrees' if best else 'does NOT agree'}**. "
                "Ranking ours: " + " > ".join(frame.sort_values("accuracy", ascending=False)["regime"]) +
                "; paper: maml > anil > multiclass > nil > random > multitask."]
    text = ("## 5. Where the features come from (paper Table 5)\n\n" + _table(view) + "\n\n"
            + _figure("regimes", "NIL accuracy of bodies from each training regime") + "\n")
    if head is not None and len(head):
        acc = dict(zip(head["training"], head["accuracy"]))
        ok = acc.get("anil", 0) > acc.get("nil", 1)
        findings.append(f"Head needed at training time: ANIL body {_pct(acc.get('anil'))} vs NIL-trained "
                        f"{_pct(acc.get('nil'))} under NIL evaluation (paper 48.0 vs 38.3) -> "
                        f"**{'agrees' if ok else 'does NOT agree'}**.")
        text += "### Is the head needed at training time?\n\n" + _table(head) + "\n\n"
    return text + "\n".join(f"- {f}" for f in findings) + "\n", findings


def dynamics_section(similarity: pd.DataFrame, freezing: pd.DataFrame) -> tuple[str, list[str]]:
    sim = similarity[["stage", "train_step", "layer", "measure", "mean", "ci95", "null_mean"]]
    frz = freezing[["stage", "train_step", "frozen", "accuracy", "ci95"]]
    early = similarity[(similarity["stage"] == similarity["stage"].iloc[0]) &
                       similarity["layer"].isin(["conv1", "conv2", "conv3"])]
    finding = (f"At the earliest saved checkpoint (step {int(similarity['train_step'].min())}) conv1-conv3 "
               f"before/after similarity is already {early['mean'].min():.3f}-{early['mean'].max():.3f} "
               "(paper: feature reuse appears early in training).")
    return ("## 6. Feature reuse during training (paper Fig. 3)\n\n" + _table(sim) + "\n\n" + _table(frz) + "\n\n"
            + _figure("training_dynamics", "Inner-loop similarity and freezing along training")
            + f"\n- {finding}\n"), [finding]


def convergence_section(frame: pd.DataFrame, cost: pd.DataFrame | None) -> tuple[str, list[str]]:
    rows = []
    for (head, n), group in frame.groupby(["head", "inner_steps"], sort=False):
        loss = group[group["metric"] == "train_loss"]
        acc = group[group["metric"] == "test_accuracy"]
        tail = max(1, len(loss) // 10)
        rows.append({"head": head, "N": n, "final loss (last 10%)": float(loss["value"].iloc[-tail:].mean()),
                     "test accuracy (%)": _pct(acc["value"].iloc[-1]) if len(acc) else "n/a",
                     "s / iteration": float(loss["elapsed_s"].iloc[-1] / len(loss))})
    view = pd.DataFrame(rows)
    text = ("## 7. Inner-loop geometry and convergence (Ji et al., NeurIPS 2020)\n\n"
            "ANIL with a strongly-convex inner loss (L2-regularised linear head) vs a nonconvex one (two-layer "
            "head), N inner steps.\n\n" + _table(view) + "\n\n"
            + _figure("convergence", "Meta-training loss vs iterations and wall-clock; test accuracy") + "\n")
    findings = []
    if len(view) and set(view["head"]) >= {"linear_l2", "two_layer"}:
        pairs = view.pivot_table(index="N", columns="head", values="final loss (last 10%)")
        findings.append("Final meta-training loss, strongly-convex (linear_l2) vs nonconvex (two_layer) inner loop: "
                        + "; ".join(f"N={n}: {row['linear_l2']:.3f} vs {row['two_layer']:.3f}" for n, row in pairs.iterrows())
                        + " (short runs: read the curves, not only the last values)")
    if cost is not None and len(cost):
        text += _table(cost) + "\n\n" + _figure("cost", "Seconds per meta-step vs N") + "\n"
        ratio = cost[cost["algorithm"] == "anil"].set_index("inner_steps")["ratio"]
        findings.append("MAML/ANIL cost ratio per meta-step for N = " + ", ".join(f"{n}: {r:.2f}x" for n, r in ratio.items())
                        + (" -- grows with N, as Ji et al. predict" if ratio.is_monotonic_increasing else
                           " -- does not grow monotonically with N here"))
    return text + "\n".join(f"- {f}" for f in findings) + "\n", findings


def write_report(out: str | Path, results: dict[str, pd.DataFrame], context: dict) -> Path:
    """Write ``<out>/report.md`` from the analyses' DataFrames; returns its path."""
    out = Path(out)
    dataset_key = f"{context['dataset']}-{context['ways']}way-{context['shots']}shot"
    sections, findings = [], []
    pieces = [
        ("inner_loop_summary", lambda: inner_loop_section(results["inner_loop_summary"], context.get("inner_steps_test"))),
        ("freezing", lambda: freezing_section(results["freezing"], dataset_key)),
        ("comparison", lambda: comparison_section(results["comparison"], results.get("speed"), dataset_key)),
        ("maml_anil_summary", lambda: cross_model_section(results["maml_anil_summary"])),
        ("regimes", lambda: regimes_section(results["regimes"], results.get("head_needed"))),
        ("dynamics_similarity", lambda: dynamics_section(results["dynamics_similarity"], results["dynamics_freezing"])),
        ("convergence", lambda: convergence_section(results["convergence"], results.get("cost"))),
    ]
    for key, build in pieces:
        if key in results:
            text, found = build()
            sections.append(text)
            findings.extend(found)
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
    path = out / "report.md"
    atomic_write_text(path, header + "\n".join(sections))
    return path
