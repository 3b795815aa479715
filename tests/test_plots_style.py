"""repana's plots leave the user's matplotlib alone: importing repana.plots and calling every plotting
function changes no rcParams and neither chooses nor switches the backend; the figures still carry
repana's style (applied through a context)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _frames() -> dict[str, pd.DataFrame]:
    layers = ["conv1", "conv2", "head"]
    rows = []
    for label in ("MAML", "ANIL"):
        for measure in ("svcca", "cka"):
            for step in (1, 2):
                for i, layer in enumerate(layers):
                    rows.append({"label": label, "measure": measure, "step": step, "layer": layer,
                                 "mean": 0.9 - 0.1 * i, "ci95": 0.02, "null_mean": 0.1})
    inner = pd.DataFrame(rows)
    freezing = pd.DataFrame({"label": ["MAML", "MAML", "ANIL", "ANIL"], "frozen": ["none", "1-2"] * 2,
                             "accuracy": [0.6, 0.55, 0.62, 0.6], "ci95": [0.02] * 4})
    bars = pd.DataFrame({"label": ["maml", "anil", "nil"], "accuracy": [0.6, 0.62, 0.64], "ci95": [0.02] * 3})
    cross = pd.DataFrame({"measure": ["cka"] * 3, "layer": layers, "mean": [0.9, 0.8, 0.5], "ci95": [0.01] * 3,
                          "null_mean": [0.1] * 3, "model_a": ["MAML"] * 3, "model_b": ["ANIL"] * 3})
    convergence = pd.DataFrame([{"head": head, "inner_steps": 5, "metric": metric, "value": 0.5, "iteration": it,
                                 "elapsed_s": it / 10}
                                for head in ("linear_l2", "two_layer") for metric in ("train_loss", "test_accuracy")
                                for it in (0, 10, 20)])
    cost = pd.DataFrame({"algorithm": ["maml", "maml", "anil", "anil"], "inner_steps": [1, 5, 1, 5],
                         "seconds": [0.1, 0.4, 0.05, 0.1]})
    dyn = inner.assign(stage=inner["step"].map({1: "early", 2: "late"}), train_step=inner["step"] * 100)
    dyn_freezing = freezing.assign(stage="late")
    similarity = pd.DataFrame([{"layer_a": a, "layer_b": b, "measure": "cka", "value": 1.0 if a == b else 0.5}
                               for a in layers for b in layers])
    return {"inner": inner, "freezing": freezing, "bars": bars, "cross": cross, "convergence": convergence,
            "cost": cost, "dyn": dyn, "dyn_freezing": dyn_freezing, "similarity": similarity}


def draw_every_figure(folder: Path) -> list:
    """Call every plotting function of repana.plots; save one figure through save_figure."""
    from repana.plots import paper, similarity

    f = _frames()
    figures = [paper.inner_loop_figure(f["inner"]), paper.inner_steps_figure(f["inner"]),
               paper.freezing_figure(f["freezing"], paper=[60, 58]),
               paper.accuracy_bars_figure(f["bars"], "label", "accuracy", paper={"maml": 48.7}),
               paper.cross_model_figure(f["cross"]), paper.convergence_figure(f["convergence"]),
               paper.cost_figure(f["cost"]), paper.dynamics_figure(f["dyn"], f["dyn_freezing"]),
               similarity.plot_similarity_heatmap(f["similarity"]), similarity.plot_similarity_by_layer(f["similarity"])]
    paper.save_figure(figures[0], folder / "inner")
    return figures


PROBE = """
import json, sys
import matplotlib
params = matplotlib.rcParams
params["font.size"] = 14
params["axes.spines.top"] = True
keys = [k for k in params if k != "backend"]
before = {k: repr(params._get(k)) for k in keys}
backend_before = params._get_backend_or_none()
sys.path.insert(0, sys.argv[1])
import test_plots_style
from pathlib import Path
figures = test_plots_style.draw_every_figure(Path(sys.argv[2]))
after = {k: repr(params._get(k)) for k in keys}
first_axes = figures[0].axes[0]
print(json.dumps({"changed": sorted(k for k in keys if before[k] != after[k]),
                  "backend_before": backend_before, "backend_after": params._get_backend_or_none(),
                  "pyplot": "matplotlib.pyplot" in sys.modules, "n_figures": len(figures),
                  "styled_spine_top": first_axes.spines["top"].get_visible(),
                  "styled_tick_size": first_axes.xaxis.get_major_ticks()[0].label1.get_fontsize()}))
"""


def test_plots_change_no_rcparams_and_never_touch_the_backend(tmp_path):
    """A fresh interpreter (nothing imported yet, no MPLBACKEND): the backend stays unresolved."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", PROBE, str(Path(__file__).parent), str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["changed"] == []
    assert result["backend_before"] is None and result["backend_after"] is None
    assert result["pyplot"] is False
    assert result["n_figures"] == 10
    # ... while the figures carry repana's style: no top spine, 9 pt ticks (not the user's 14)
    assert result["styled_spine_top"] is False and result["styled_tick_size"] == 9.0
    assert (tmp_path / "inner.png").stat().st_size > 1000 and (tmp_path / "inner.pdf").is_file()


def test_plots_in_process_leave_the_set_backend_and_rcparams(tmp_path):
    import matplotlib

    before_backend = matplotlib.get_backend()
    with matplotlib.rc_context({"font.size": 13.0}):
        before = {k: repr(v) for k, v in matplotlib.rcParams.items()}
        draw_every_figure(tmp_path)
        after = {k: repr(v) for k, v in matplotlib.rcParams.items()}
    assert before == after
    assert matplotlib.get_backend() == before_backend


def test_paper_style_is_a_context():
    import matplotlib

    from repana.plots.style import paper_style

    size = matplotlib.rcParams["font.size"]
    with paper_style(font_size=11):
        assert matplotlib.rcParams["font.size"] == 11 and matplotlib.rcParams["savefig.bbox"] == "tight"
    assert matplotlib.rcParams["font.size"] == size
