"""Layer x layer comparison: tidy frame, per-layer preprocessing done once, random networks, plots."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from repana.capture import Capture
from repana.compare import COLUMNS, Comparison
from repana.errors import InputError
from repana.plots.similarity import plot_similarity_by_layer, plot_similarity_heatmap
from repana.similarity import cka, reduce_conv, svcca

pytestmark = pytest.mark.filterwarnings("ignore::repana.similarity.RepanaWarning")


def conv_net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 5),
    ).eval()


@pytest.fixture
def images():
    return torch.rand(300, 1, 16, 16, generator=torch.Generator().manual_seed(0))


def test_tidy_frame_values_match_the_measures(rng):
    acts_a = {"a1": rng.normal(size=(120, 4)), "a2": rng.normal(size=(120, 6))}
    acts_b = {"b1": acts_a["a1"] @ rng.normal(size=(4, 5)), "b2": rng.normal(size=(120, 3))}
    frame = Comparison(measures=["cka", "svcca"], measure_options={"svcca": {"keep": 1.0}}).activations(acts_a, acts_b)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == 2 * 2 * 2
    assert frame[["layer_a", "layer_b"]].drop_duplicates().values.tolist() == [
        ["a1", "b1"], ["a1", "b2"], ["a2", "b1"], ["a2", "b2"]]
    for row in frame.itertuples():
        x, y = acts_a[row.layer_a], acts_b[row.layer_b]
        expected = cka(x, y) if row.measure == "cka" else svcca(x, y, keep=1.0)
        assert row.value == pytest.approx(expected, rel=1e-12)
        assert (row.n_datapoints, row.n_features_a, row.n_features_b) == (120, x.shape[1], y.shape[1])
    one = frame[(frame.layer_a == "a1") & (frame.layer_b == "b1")]
    assert one.set_index("measure").loc["svcca", "value"] == pytest.approx(1.0)


def test_each_layer_is_decomposed_once(rng, monkeypatch):
    calls = []
    original = torch.linalg.svd
    monkeypatch.setattr(torch.linalg, "svd", lambda *a, **k: calls.append(a[0].shape) or original(*a, **k))
    acts_a = {f"a{i}": rng.normal(size=(200, 5 + i)) for i in range(3)}
    acts_b = {f"b{i}": rng.normal(size=(200, 4 + i)) for i in range(2)}
    frame = Comparison(measures=["cca", "svcca", "procrustes"]).activations(acts_a, acts_b)
    assert len(frame) == 3 * 2 * 3
    assert sorted(calls) == sorted([(200, 5), (200, 6), (200, 7), (200, 4), (200, 5)])


def test_two_random_conv_nets_are_clearly_different(images):
    frame = Comparison(measures=["cka", "cka_debiased"], reduction="flatten").models(
        conv_net(1), conv_net(2), images, Capture(layers=["1", "4", "7"], batch_size=128))
    diagonal = frame[frame.layer_a == frame.layer_b].set_index(["measure", "layer_a"])["value"]
    # First conv block: both nets compute local features of the same pixels (measured 0.91 / 0.83);
    # the second block and the head are far apart (0.48 / 0.26 and 0.02 / 0.005).
    assert diagonal.loc[("cka", "1")] < 0.95 and diagonal.loc[("cka_debiased", "1")] < 0.9
    assert diagonal.loc[("cka", "4")] < 0.6 and diagonal.loc[("cka_debiased", "4")] < 0.4
    assert diagonal.loc[("cka", "7")] < 0.2
    itself = Comparison(measures=["cka"], reduction="flatten").models(conv_net(1), None, images,
                                                                      Capture(layers=["0", "3"]))
    assert itself[itself.layer_a == itself.layer_b]["value"].tolist() == pytest.approx([1.0, 1.0])


def test_one_model_two_parameter_sets(images):
    model = conv_net(3)
    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    changed = dict(params, **{"7.weight": params["7.weight"] + 0.5 * torch.randn_like(params["7.weight"])})
    frame = Comparison(measures=["cka"], reduction="mean").models(model, None, images, Capture(layers=["3", "7"]),
                                                                  params_a=params, params_b=changed)
    values = frame.set_index(["layer_a", "layer_b"])["value"]
    assert values[("3", "3")] == pytest.approx(1.0)  # upstream of the change: identical
    assert values[("7", "7")] < 0.99


def test_reduction_is_required_and_positions_mode(images):
    acts = {"conv": torch.randn(20, 3, 4, 4)}
    with pytest.raises(InputError, match="choose reduction="):
        Comparison(measures=["cka"]).activations(acts)
    frame = Comparison(measures=["svcca"], reduction="positions").activations(acts)
    assert frame["n_datapoints"].iloc[0] == 20 * 16
    assert frame["value"].iloc[0] == pytest.approx(svcca(reduce_conv(acts["conv"], "positions"),
                                                         reduce_conv(acts["conv"], "positions")))
    with pytest.raises(InputError, match="unknown similarity measure"):
        Comparison(measures=["nope"], reduction="mean")


def test_heatmap_and_layer_plot(rng):
    acts = {f"l{i}": rng.normal(size=(100, 4)) + (i * 0.5) for i in range(4)}
    acts["l1"] = acts["l0"] + 0.3 * rng.normal(size=(100, 4))
    frame = Comparison(measures=["cka", "procrustes"]).activations(acts)
    figure = plot_similarity_heatmap(frame)
    heat_axes = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in heat_axes] == ["linear CKA", "Procrustes similarity"]
    assert heat_axes[0].get_xlabel() == "layer (model B)" and heat_axes[0].get_ylabel() == "layer (model A)"
    assert len(figure.axes) == 4  # two panels, two colour bars
    texts = [t.get_text() for t in heat_axes[0].texts]
    assert len(texts) == 16 and texts[0] == "1.00"
    value = frame[(frame.layer_a == "l0") & (frame.layer_b == "l1") & (frame.measure == "cka")]["value"].item()
    assert texts[1] == f"{value:.2f}"
    lines = plot_similarity_by_layer(frame)
    ax = lines.axes[0]
    assert ax.get_xlabel() == "layer" and len(ax.get_legend().get_texts()) == 2
    ci = pd.DataFrame({"layer": ["c1", "c2"], "measure": "cka", "value": [0.8, 0.6], "low": [0.7, 0.5],
                       "high": [0.9, 0.65]})
    bars = plot_similarity_by_layer(ci, kind="bar")
    assert [round(p.get_height(), 2) for p in bars.axes[0].patches] == [0.8, 0.6]
    with pytest.raises(InputError, match="lacks columns"):
        plot_similarity_heatmap(ci)


def test_one_model_against_itself_is_symmetric_and_computed_once_per_pair(rng, monkeypatch):
    from repana.similarity import registry

    acts = {f"l{i}": rng.normal(size=(80, 3 + i)) for i in range(4)}
    calls = []
    original = registry.get_measure("cka").function
    spec = registry.Measure("counting_cka", lambda rx, ry, **kw: calls.append(1) or original(rx, ry, **kw),
                            "test", symmetric=True, defaults={"kernel": "linear", "debiased": False})
    monkeypatch.setitem(registry._REGISTRY, "counting_cka", spec)
    frame = Comparison(measures=["counting_cka"]).activations(acts)
    assert len(calls) == 4 * 5 // 2  # upper triangle with the diagonal
    matrix = frame.pivot(index="layer_a", columns="layer_b", values="value").to_numpy()
    np.testing.assert_allclose(matrix, matrix.T, rtol=1e-12)
    assert matrix[0, 1] == pytest.approx(cka(acts["l0"], acts["l1"]), rel=1e-12)


def test_readme_compare_example_runs(tmp_path, monkeypatch, request):
    """The 'Compare your own models' example of README.md runs, finds the diagonal, and writes its figure."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Compare your own models", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REPANA_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = torch.get_num_threads()
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    namespace = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    assert (tmp_path / "out" / "compare_example.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "figures").exists()  # the committed figures are never rewritten
    assert torch.get_num_threads() == 1  # the CLI's policy, REPANA_THREADS unset
    frame = namespace["frame"]
    diagonal = frame[(frame.layer_a == frame.layer_b) & (frame.measure == "cka_debiased")].set_index("layer_a")
    off_diagonal = frame[(frame.layer_a != frame.layer_b) & (frame.measure == "cka_debiased")]
    # Same task, two seeds: the heads agree closely and each layer is most like its counterpart.
    assert diagonal.loc["head", "value"] > 0.9
    for layer, row in diagonal.iterrows():
        assert row["value"] >= off_diagonal[off_diagonal.layer_a == layer]["value"].max() - 0.05, layer


def test_measures_sharing_per_pair_products_match_standalone_calls(rng):
    # cka, cka_debiased and procrustes share X^T Y; cca, svcca and pwcca share Ux^T Uy within a pair.
    z = rng.normal(size=(150, 5))
    acts_a = {"a1": z @ rng.normal(size=(5, 6)) + 0.1 * rng.normal(size=(150, 6)), "a2": rng.normal(size=(150, 9))}
    acts_b = {"b1": np.tanh(z @ rng.normal(size=(5, 7))), "b2": z @ rng.normal(size=(5, 4))}
    measures = ["cka", "cka_debiased", "procrustes", "cca", "svcca", "pwcca"]
    frame = Comparison(measures=measures, measure_options={"svcca": {"keep": 2}}).activations(acts_a, acts_b)
    from repana.similarity import similarity

    for row in frame.itertuples():
        options = {"keep": 2} if row.measure == "svcca" else {}
        expected = similarity(row.measure, acts_a[row.layer_a], acts_b[row.layer_b], **options)
        assert row.value == pytest.approx(expected, rel=1e-10, abs=1e-12), row


def _episodes(seed, n_episodes=6, n=25, dtype=torch.float32):
    """Per-episode activations of a conv layer, a wide and a very wide 2-D layer and a dead (constant) layer."""
    generator = torch.Generator().manual_seed(seed)
    episodes = []
    for _ in range(n_episodes):
        z = torch.randn(n, 6, generator=generator, dtype=torch.float64)
        episodes.append({
            "conv": torch.relu(torch.randn(n, 8, 5, 5, generator=generator, dtype=torch.float64)
                               + z[:, :1, None, None]).to(dtype),
            "fc": (z @ torch.randn(6, 20, generator=generator, dtype=torch.float64)
                   + 0.5 * torch.randn(n, 20, generator=generator, dtype=torch.float64)).to(dtype),
            "wide": torch.randn(n, 40, generator=generator, dtype=torch.float64).to(dtype),
            "dead": torch.zeros(n, 4, dtype=dtype),
        })
    return episodes


# ----- an independent per-episode engine (one loop per layer, measure and episode), the oracle that
# Comparison.episodes must match -----
import math  # noqa: E402
from typing import Mapping, Sequence  # noqa: E402

CCA_FAMILY = ("cca", "cca_r2", "svcca", "pwcca")


def default_reduction(measure: str) -> str:
    return "positions" if measure in CCA_FAMILY else "flatten"


def _to_2d(activation: torch.Tensor, reduction: str) -> torch.Tensor:
    from repana.similarity import reduce_conv

    if activation.dim() == 4:
        return reduce_conv(activation, mode=reduction)
    if activation.dim() == 2:
        return activation
    return activation.reshape(activation.shape[0], -1)


def _null_similarity(measure: str, x: torch.Tensor, y: torch.Tensor, permutations: int, seed: int) -> float:
    """Mean similarity of ``x`` with the rows of ``y`` shuffled: what unrelated data of this size gets."""
    from repana.similarity import null_baseline

    return null_baseline(measure, x, y, n_permutations=permutations, seed=seed).mean


def _safe_similarity(measure: str, x: torch.Tensor, y: torch.Tensor) -> tuple[float, str]:
    from repana.similarity import similarity

    try:
        return float(similarity(measure, x, y)), ""
    except InputError as error:  # e.g. constant activations (dead ReLUs) in a tiny network
        return float("nan"), str(error)[:120]


def episode_similarity_rows(acts_a: Sequence[Mapping[str, torch.Tensor]],
                            acts_b: Sequence[Mapping[str, torch.Tensor]],
                            layers: Sequence[str], measures: Sequence[str], *,
                            reduction: str | None = None, min_ratio: float = 5.0,
                            null: bool = True, null_permutations: int = 3, seed: int = 0) -> list[dict]:
    """Similarity of two representations of the same datapoints, layer by layer, episode by episode.

    ``acts_a[e][layer]`` and ``acts_b[e][layer]``: activations of episode ``e``'s inputs, shape
    ``(n, C, H, W)`` or ``(n, features)``, same ``n`` for a and b. Conv maps are reduced with
    ``reduction`` (default per measure: :func:`default_reduction`). A CCA-family measure is computed
    per episode only when datapoints >= ``min_ratio`` x features; otherwise consecutive episodes are
    pooled into groups large enough (scope ``"pooled"``), and when even all episodes together are too
    few the row holds NaN and says why. ``null_value``: mean of the measure over ``null_permutations``
    row permutations of one side (:func:`repana.similarity.null_baseline`). Returns one dict per (group, layer, measure) with columns
    episode, scope, layer, measure, value, null_value, n_datapoints, n_features, reduction, note.
    """
    from repana.similarity import list_measures

    unknown = [m for m in measures if m not in list_measures()]
    if unknown:
        raise InputError(f"unknown similarity measure(s) {unknown}; available: {', '.join(list_measures())}")
    if len(acts_a) != len(acts_b) or not acts_a:
        raise InputError(f"need the same non-zero number of episodes on both sides, got {len(acts_a)} "
                         f"and {len(acts_b)}")
    rows = []
    n_episodes = len(acts_a)
    for layer in layers:
        for measure in measures:
            mode = reduction or default_reduction(measure)
            xs = [_to_2d(a[layer], mode).double() for a in acts_a]
            ys = [_to_2d(b[layer], mode).double() for b in acts_b]
            n_per, features = xs[0].shape[0], max(xs[0].shape[1], ys[0].shape[1])
            group = 1
            if measure in CCA_FAMILY and n_per < min_ratio * features:
                group = min(n_episodes, math.ceil(min_ratio * features / n_per))
            scope = "episode" if group == 1 else "pooled"
            for start in range(0, n_episodes - group + 1, group):
                x = torch.cat(xs[start:start + group])
                y = torch.cat(ys[start:start + group])
                note = ""
                if measure in CCA_FAMILY and x.shape[0] < min_ratio * features:
                    value, null_value = float("nan"), float("nan")
                    note = (f"skipped: {x.shape[0]} datapoints < {min_ratio} x {features} features even "
                            "with all episodes pooled; use more episodes or reduction='positions'")
                else:
                    value, note = _safe_similarity(measure, x, y)
                    null_value = (_null_similarity(measure, x, y, null_permutations, seed + start)
                                  if null and np.isfinite(value) else float("nan"))
                rows.append({"episode": start if group == 1 else f"{start}-{start + group - 1}",
                             "scope": scope, "layer": layer, "measure": measure, "value": value,
                             "null_value": null_value, "n_datapoints": int(x.shape[0]),
                             "n_features": int(features),
                             "reduction": mode if acts_a[0][layer].dim() == 4 else "none", "note": note})
    return rows



@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_comparison_of_episodes_reproduces_episode_similarity_rows(dtype):
    from repana.compare import EPISODE_COLUMNS, reduction_by_measure

    acts_a, acts_b = _episodes(0, dtype=dtype), _episodes(1, dtype=dtype)
    layers, measures = ["conv", "fc", "wide", "dead"], ["svcca", "cka_debiased", "cca", "pwcca", "cka"]
    old = pd.DataFrame(episode_similarity_rows(acts_a, acts_b, layers, measures, min_ratio=5.0, null=True,
                                               null_permutations=3, seed=7))
    new = Comparison(measures=measures, pairs="same", reduction=reduction_by_measure, min_ratio=5.0,
                     null_permutations=3, seed=7, errors="note", dtype=torch.float64).episodes(acts_a, acts_b)
    assert list(new.columns) == EPISODE_COLUMNS
    assert all(reduction_by_measure(m, "conv") == default_reduction(m) for m in measures)
    assert len(new) == len(old)
    assert (new["layer_a"] == old["layer"]).all() and (new["layer_b"] == old["layer"]).all()
    for column in ["measure", "n_datapoints", "reduction", "scope"]:
        assert new[column].tolist() == old[column].tolist(), column
    assert new["episode"].astype(str).tolist() == old["episode"].astype(str).tolist()
    assert (new[["n_features_a", "n_features_b"]].max(axis=1) == old["n_features"]).all()
    np.testing.assert_array_equal(new["value"].to_numpy(), old["value"].to_numpy())
    # the null baseline permutes prepared layers whose SVD is already cached (the old code prepared them
    # afresh): the same numbers up to rounding (measured <= 1.1e-16 absolute)
    np.testing.assert_allclose(new["null_value"].to_numpy(), old["null_value"].to_numpy(), rtol=1e-12, atol=1e-15)
    # what the inputs exercise: per-episode rows, a pooled group of 4 (the remainder of 2 left out), a skip
    # (40 features need 200 datapoints: 6 x 25 are too few) and a dead layer (NaN with the reason)
    svcca = new[new.measure == "svcca"].set_index("layer_a")
    assert svcca.loc["fc", "episode"] == "0-3" and svcca.loc["fc", "scope"] == "pooled"
    assert np.isnan(svcca.loc["wide", "value"]) and "even with all episodes pooled" in svcca.loc["wide", "note"]
    assert new[new.layer_a == "dead"]["value"].isna().all()
    assert new[new.layer_a == "dead"]["note"].str.contains("constant").all()
    assert new[new.layer_a == "conv"]["value"].notna().all() and new["null_value"].notna().sum() > 20


def test_comparison_of_episodes_prepares_each_layer_once_per_reduction(monkeypatch):
    from repana.similarity import representation

    prepared = []
    original = representation.Representation.__init__

    def counting(self, array, name="X", min_datapoints=2):
        prepared.append((name, tuple(array.shape)))
        original(self, array, name, min_datapoints)

    monkeypatch.setattr(representation.Representation, "__init__", counting)
    acts_a, acts_b = _episodes(0, n_episodes=2), _episodes(1, n_episodes=2)
    frame = Comparison(measures=["cka", "cka_debiased", "procrustes", "svcca"],
                       pairs=[("conv", "conv"), ("fc", "fc")],
                       reduction={"cka": "flatten", "cka_debiased": "flatten", "procrustes": "flatten",
                                  "svcca": "positions"}).episodes(acts_a, acts_b)
    assert len(frame) == 2 * 4 * 2
    # per side and episode: conv flattened, conv by positions, fc -- whatever the number of measures
    assert len(prepared) == 2 * 2 * 3
    conv_and_fc = [{layer: acts[layer] for layer in ("conv", "fc")} for acts in acts_a]
    all_pairs = Comparison(measures=["cka"], pairs="all", reduction="mean").episodes(conv_and_fc)
    assert all_pairs[["layer_a", "layer_b"]].drop_duplicates().values.tolist() == [
        ["conv", "conv"], ["conv", "fc"], ["fc", "conv"], ["fc", "fc"]]
    assert all_pairs[all_pairs.layer_a == all_pairs.layer_b]["value"].tolist() == pytest.approx([1.0] * 4)
    with pytest.raises(InputError, match="reduction maps measures"):
        Comparison(measures=["cka", "svcca"], reduction={"cka": "flatten"})
    with pytest.raises(InputError, match=r"constant across"):
        Comparison(measures=["cka"], pairs=[("dead", "dead")]).episodes(acts_a, acts_b)


def test_comparison_of_activations_options_nulls_notes_and_pairs(rng):
    from repana.similarity import null_baseline

    acts_a = {"a": rng.normal(size=(60, 5)), "same": rng.normal(size=(60, 3)), "flat0": np.zeros((60, 2))}
    acts_b = {"b": rng.normal(size=(60, 4)), "same": acts_a["same"] @ rng.normal(size=(3, 3))}
    with pytest.raises(InputError, match=r"cka for 'flat0' \(A\) vs 'b' \(B\).*constant"):
        Comparison(measures=["cka"]).activations(acts_a, acts_b)
    frame = Comparison(measures=["cka"], null_permutations=5, seed=3, errors="note").activations(acts_a, acts_b)
    assert list(frame.columns) == COLUMNS + ["null_value", "note"]
    row = frame[(frame.layer_a == "a") & (frame.layer_b == "b")].iloc[0]
    assert row["null_value"] == null_baseline("cka", acts_a["a"], acts_b["b"], n_permutations=5, seed=3).mean
    assert row["note"] == "" and row["reduction"] == "none"
    assert frame[frame.layer_a == "flat0"]["value"].isna().all()
    same = Comparison(measures=["cca"], pairs=[("same", "same")]).activations(acts_a, acts_b)  # invertible map: 1
    assert same["value"].tolist() == pytest.approx([1.0])


def test_comparison_of_models_leaves_train_mode_models_unchanged():
    """Train-mode batch norm updates its running statistics on every forward pass: they are restored, bit
    for bit, and so is every module's train / eval flag."""
    torch.manual_seed(0)
    model_a = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).train()
    model_a[3].eval()
    model_b = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8)).eval()
    model_b[1].train()
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (model_a, model_b)]
    modes = [[module.training for module in m.modules()] for m in (model_a, model_b)]
    inputs = torch.randn(64, 5, generator=torch.Generator().manual_seed(1))
    frame = Comparison(measures=["cka"]).models(model_a, model_b, inputs, Capture(layers=["1"], batch_size=16))
    assert frame["value"].between(0, 1).all()
    for model, state, mode in zip((model_a, model_b), before, modes):
        after = model.state_dict()
        assert list(after) == list(state)
        assert all(torch.equal(state[key], after[key]) for key in state)
        assert [module.training for module in model.modules()] == mode
    assert int(model_a[1].num_batches_tracked) == 0


def test_comparison_of_models_refuses_what_is_not_a_model_and_a_missing_device(images):
    net = conv_net(0)
    with pytest.raises(InputError, match=r"^model_a is of type str, not a torch.nn.Module"):
        Comparison().models("net", None, images, Capture(layers=["0"]))
    with pytest.raises(InputError, match=r"^model_b is of type int, not a torch.nn.Module"):
        Comparison().models(net, 3, images, Capture(layers=["0"]))
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match=r"^device cuda: no CUDA GPU is available here"):
            Capture(layers=["0"], device="cuda")


def test_two_datapoints_are_flagged_degenerate_with_a_warning():
    """Two datapoints: every centred representation has rank 1, so plain CKA and Procrustes are 1."""
    from repana.similarity import RepanaWarning

    rng = np.random.default_rng(0)
    acts_a = {"a": rng.normal(size=(2, 16)), "b": rng.normal(size=(2, 3))}
    acts_b = {"a": rng.normal(size=(2, 16)), "b": rng.normal(size=(2, 3))}
    with pytest.warns(RepanaWarning, match=r"8 of 8 similarity values are degenerate \(column 'degenerate'\), "
                                           r"e.g. cka for 'a' \(A\) vs 'a' \(B\): A:a has effective rank 1"):
        frame = Comparison(measures=["cka", "procrustes"]).activations(acts_a, acts_b)
    assert frame["degenerate"].tolist() == [True] * 8
    assert np.allclose(frame["value"], 1.0)
    healthy = Comparison(measures=["cka", "procrustes", "svcca"]).activations({"a": rng.normal(size=(200, 4))},
                                                                               {"a": rng.normal(size=(200, 4))})
    assert healthy["degenerate"].tolist() == [False] * 3


def test_comparison_settings_are_checked_once_and_shown_by_repr():
    """Each bad setting is one InputError naming it, raised where the settings are made, before any data."""
    from repana.compare import reduction_by_measure

    for settings, message in [
        (dict(measures=[]), "no measures given"),
        (dict(measures=["cka"], measure_options={"svcca": {"keep": 2}}), r"measure_options for \['svcca'\]"),
        (dict(errors="ignore"), r"errors='ignore': choose 'raise' or 'note'"),
        (dict(min_ratio=0), "min_ratio must be positive, got 0"),
        (dict(null_permutations=-1), "null_permutations must be a non-negative integer, got -1"),
        (dict(reduction="pool"), "unknown reduction 'pool'"),
        (dict(layout="image"), "unknown layout 'image'"),
        (dict(layout={"conv*": "grid"}), "unknown layout 'grid'"),
        (dict(pairs="diagonal"), r"pairs='diagonal': choose 'all', 'same'"),
        (dict(pairs=[("a", "b", "c")]), "pairs must be 'all', 'same' or a non-empty list"),
    ]:
        with pytest.raises(InputError, match=message):
            Comparison(**settings)
    with pytest.raises(TypeError):
        Comparison(["cka"])  # settings are keyword-only
    comparison = Comparison(measures="svcca", pairs=[["a", "a"]], reduction=reduction_by_measure, min_ratio=5.0)
    assert comparison.measures == ("svcca",) and comparison.pairs == (("a", "a"),)
    assert repr(comparison).startswith("Comparison(measures=('svcca',), reduction=<function reduction_by_measure")
    assert "pairs=(('a', 'a'),), min_ratio=5.0, null_permutations=0" in repr(comparison)
    with pytest.raises(AttributeError):
        comparison.seed = 1  # frozen: a comparison is its settings
    assert comparison.columns == COLUMNS
    assert Comparison(null_permutations=2, errors="note").columns == COLUMNS + ["null_value", "note"]


def test_capture_b_captures_other_layers_of_model_b(images, monkeypatch):
    """capture_b (the same settings, other layers) gives B's own layers; capture_b equal to capture captures
    a model compared with itself once."""
    import dataclasses

    net_a, net_b = conv_net(1), conv_net(2)
    capture = Capture(layers=["1", "4"], batch_size=100)
    comparison = Comparison(measures=["cka"], reduction="mean")
    frame = comparison.models(net_a, net_b, images, capture, capture_b=dataclasses.replace(capture, layers=["7"]))
    assert frame[["layer_a", "layer_b"]].values.tolist() == [["1", "7"], ["4", "7"]]
    expected = Comparison(measures=["cka"], reduction="mean").activations(
        capture.run(net_a, images), Capture(layers="7", batch_size=100).run(net_b, images))
    np.testing.assert_array_equal(frame["value"].to_numpy(), expected["value"].to_numpy())
    runs = []
    original = Capture.run
    monkeypatch.setattr(Capture, "run", lambda self, *args: runs.append(self.layers) or original(self, *args))
    itself = comparison.models(net_a, None, images, capture, capture_b=dataclasses.replace(capture))
    assert runs == [("1", "4")]
    assert itself[itself.layer_a == itself.layer_b]["value"].tolist() == pytest.approx([1.0, 1.0])
