"""Glyphs: deterministic, disjoint splits, strokes on a clean background, learnable but not trivial."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repana.cli import main
from repana.data import EpisodeSampler, load_splits
from repana.data.glyphs import generate_glyphs
from repana.errors import InputError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPANA_CACHE_DIR", str(tmp_path / "cache"))


def test_deterministic_and_independent_of_the_number_of_classes():
    a = generate_glyphs(range(6), n_drawers=5, seed=0)
    b = generate_glyphs(range(10), n_drawers=5, seed=0)
    assert a.shape == (6, 5, 28, 28) and a.dtype == np.uint8
    assert np.array_equal(a, b[:6])
    assert np.array_equal(generate_glyphs([4], n_drawers=5, seed=0)[0], a[4])
    assert not np.array_equal(a, generate_glyphs(range(6), n_drawers=5, seed=1))


def test_strokes_on_background_and_drawers_vary():
    images = generate_glyphs(range(40), n_drawers=10, seed=0).astype(np.float64) / 255
    assert images.max() == 1.0 and images.min() == 0.0
    ink = images.mean(axis=(2, 3))
    assert 0.04 < ink.mean() < 0.3 and (ink > 0.01).all()  # every glyph has strokes, none is a blob
    flat = images.reshape(40, 10, -1)
    assert all(len({d.tobytes() for d in flat[c]}) == 10 for c in range(40))  # drawers differ
    within = np.mean([np.linalg.norm(flat[c, i] - flat[c, j]) for c in range(40) for i, j in [(0, 1), (2, 3)]])
    between = np.mean([np.linalg.norm(flat[c, 0] - flat[c + 1, 0]) for c in range(39)])
    assert within < 0.9 * between


def test_splits_are_disjoint_and_sized():
    splits = load_splits("glyphs", n_train=30, n_val=5, n_test=10, n_drawers=6, seed=3)
    assert [splits[p].n_classes for p in ("train", "val", "test")] == [30, 5, 10]
    assert len(splits["train"]) == 180 and splits["train"].image_shape == (1, 28, 28)
    names = [set(splits[p].class_names) for p in ("train", "val", "test")]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    again = load_splits("glyphs", n_train=30, n_val=5, n_test=10, n_drawers=6, seed=3)  # cached
    assert torch.equal(again["test"].images, splits["test"].images)
    with pytest.raises(InputError, match="n_drawers must be a positive integer"):
        load_splits("glyphs", n_drawers=0)
    with pytest.raises(InputError, match="glyphs have one split"):
        load_splits("glyphs", split="maml")


def test_nearest_neighbour_baseline_is_above_chance_but_far_from_perfect():
    test = load_splits("glyphs", n_train=0, n_val=0, n_test=100, seed=0)["test"]
    batch = EpisodeSampler(test, ways=5, shots=1, queries=15, seed=0).sample(300)
    distances = torch.cdist(batch.query_x.flatten(2).double(), batch.support_x.flatten(2).double())
    predicted = batch.support_y.gather(1, distances.argmin(2))
    accuracy = (predicted == batch.query_y).double().mean().item()
    assert 0.45 < accuracy < 0.75  # chance 0.2; measured ~0.59 on 300 test classes


def test_cli_info_on_the_default_dataset(capsys):
    assert main(["data", "info", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"classes": 1000' in out and '"classes": 300' in out and '"images": 2000' in out
