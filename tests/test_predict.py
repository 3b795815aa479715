"""``repana predict``: one episode given as image folders; NIL on duplicated images is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from repana.cli import main
from repana.meta.checkpoint import save_checkpoint
from repana.meta.config import TrainConfig
from repana.models import build_model

LABELS = ["alpha", "beta", "gamma"]


@pytest.fixture
def checkpoint(tmp_path):
    config = TrainConfig(dataset="glyphs", hidden=8, ways=3, algorithm="anil", inner_steps_test=2)
    model_config = config.model_config()
    torch.manual_seed(0)
    model = build_model(model_config)
    return save_checkpoint(tmp_path / "ckpt.pt", model=model, model_config=model_config, algorithm="anil",
                           config=config.to_dict(), step=0)


def _draw(rng, size=40, dark_on_light=True) -> Image.Image:
    """A random blob drawing; dark strokes on white like a scanned character."""
    pixels = (rng.random((size, size)) < 0.15).astype(np.uint8) * 255
    return Image.fromarray(255 - pixels if dark_on_light else pixels, mode="L")


def _episode(tmp_path, shots=(2, 2, 2), query_copies_support=True, seed=0):
    rng = np.random.default_rng(seed)
    support, query = tmp_path / "support", tmp_path / "query"
    for label, k in zip(LABELS, shots):
        (support / label).mkdir(parents=True)
        for i in range(k):
            image = _draw(rng)
            image.save(support / label / f"{i}.png")
            if query_copies_support:
                (query / label).mkdir(parents=True, exist_ok=True)
                image.save(query / label / f"{label}_{i}.png")
    return support, query


def test_nil_on_copies_of_the_support_returns_their_labels(tmp_path, checkpoint, capsys):
    """1-shot, query = exactly the support images: same batch statistics, so the same features;
    cosine similarity 1 to its own support image and < 1 to the others -> its own label."""
    support, query = _episode(tmp_path, shots=(1, 1, 1))
    out = tmp_path / "pred.csv"
    code = main(["predict", str(checkpoint), "--support", str(support), "--query", str(query),
                 "--method", "nil", "--out", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    assert "accuracy 100.0% on 3 labelled query images" in captured.err
    import pandas as pd

    frame = pd.read_csv(out)
    assert len(frame) == 3
    assert [label for label in frame["label"]] == [f.split("/")[-1].split("_")[0] for f in frame["file"]]


def test_adapt_prints_one_line_per_query_image(tmp_path, checkpoint, capsys):
    support, _ = _episode(tmp_path)
    flat = tmp_path / "flat"
    flat.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        _draw(rng).convert("RGB").save(flat / f"q{i}.jpg")  # RGB jpg -> converted to 1 channel
    assert main(["predict", str(checkpoint), "--support", str(support), "--query", str(flat)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0].split("/")[-1] for line in lines] == ["q0.jpg", "q1.jpg", "q2.jpg", "q3.jpg"]
    assert all(line.split("\t")[1] in LABELS for line in lines)


def test_unreadable_image_is_a_clear_error(tmp_path, checkpoint, capsys):
    support, query = _episode(tmp_path)
    (support / "beta" / "broken.png").write_bytes(b"\x89PNG not really")
    assert main(["predict", str(checkpoint), "--support", str(support), "--query", str(query)]) == 1
    err = capsys.readouterr().err
    assert "cannot read image" in err and "broken.png" in err


@pytest.mark.parametrize("shots, message", [
    ((2, 1, 2), "same number of images.*alpha: 2, beta: 1, gamma: 2"),
    ((2, 2, 0), "label folders without images: \\['gamma'\\]"),
])
def test_mismatched_counts_are_clear_errors(tmp_path, checkpoint, capsys, shots, message):
    import re

    support, query = _episode(tmp_path, shots=shots, query_copies_support=False)
    (tmp_path / "query").mkdir(exist_ok=True)
    _draw(np.random.default_rng(0)).save(tmp_path / "query" / "q.png")
    assert main(["predict", str(checkpoint), "--support", str(support), "--query", str(query)]) == 1
    assert re.search(message, capsys.readouterr().err)


def test_wrong_number_of_labels_for_the_head(tmp_path, checkpoint, capsys):
    support, query = _episode(tmp_path)
    (support / "delta").mkdir()
    for i in range(2):
        _draw(np.random.default_rng(i)).save(support / "delta" / f"{i}.png")
    assert main(["predict", str(checkpoint), "--support", str(support), "--query", str(query)]) == 1
    assert "4 labels but the checkpoint's head has 3 outputs" in capsys.readouterr().err
    # NIL has no head: any number of labels works
    assert main(["predict", str(checkpoint), "--support", str(support), "--query", str(query),
                 "--method", "nil"]) == 0


def test_empty_query_folder(tmp_path, checkpoint, capsys):
    support, _ = _episode(tmp_path, query_copies_support=False)
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(checkpoint), "--support", str(support), "--query", str(tmp_path / "empty")]) == 1
    assert "holds no images" in capsys.readouterr().err


def test_read_image_inverts_dark_on_light(tmp_path):
    from repana.data.images import load_image as read_image

    Image.fromarray(np.full((8, 8), 255, np.uint8), mode="L").save(tmp_path / "white.png")
    assert float(read_image(tmp_path / "white.png", 1, 4).max()) == 0.0  # white background -> 0
    assert float(read_image(tmp_path / "white.png", 1, 4, invert="no").min()) == 1.0
    assert read_image(tmp_path / "white.png", 3, 6).shape == (3, 6, 6)


def test_rgba_drawings_on_a_transparent_background_are_read(tmp_path, checkpoint, capsys):
    """Black strokes on a transparent background (hidden colour black, as editors save it): read on
    white, then inverted to the Omniglot convention, so NIL on copies of the support is exact. The
    former reader dropped alpha and saw three blank images (one label for every query)."""
    rng = np.random.default_rng(3)
    support, query = tmp_path / "support", tmp_path / "query"
    for label in LABELS:
        (support / label).mkdir(parents=True)
        (query / label).mkdir(parents=True)
        pixels = np.zeros((28, 28, 4), np.uint8)
        pixels[..., 3] = (rng.random((28, 28)) < 0.15) * 255  # opaque black strokes, the rest transparent
        image = Image.fromarray(pixels, mode="RGBA")
        image.save(support / label / "0.png")
        image.save(query / label / f"{label}_0.png")
    assert main(["predict", str(checkpoint), "--support", str(support), "--query", str(query),
                 "--method", "nil"]) == 0
    assert "accuracy 100.0% on 3 labelled query images" in capsys.readouterr().err
