"""MiniImageNet in both formats (pickled caches, split CSVs + images/) on small built fixtures; bad input."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from repana.data import load_splits
from repana.data.miniimagenet import PICKLE_FILES
from repana.data.safe_pickle import safe_load
from repana.errors import DataError, InputError

CLASSES = {"train": ["n01532829", "n01558993", "n01704323"], "val": ["n01855672", "n02091244"],
           "test": ["n01930112", "n01981276"]}
PER_CLASS = 3


def fixture_images(part: str) -> tuple[np.ndarray, list[str]]:
    """uint8 (N, 84, 84, 3) with a per-image colour pattern, and the class of each image."""
    rng = np.random.default_rng(len(part))
    names = [c for c in CLASSES[part] for _ in range(PER_CLASS)]
    return rng.integers(0, 256, (len(names), 84, 84, 3), dtype=np.uint8), names


def write_pickles(folder, protocol=4):
    folder.mkdir(parents=True, exist_ok=True)
    for part, file in PICKLE_FILES.items():
        images, names = fixture_images(part)
        class_dict = {c: [i for i, n in enumerate(names) if n == c] for c in CLASSES[part]}
        with open(folder / file, "wb") as handle:
            pickle.dump({"image_data": images, "class_dict": class_dict}, handle, protocol=protocol)


def write_csvs(folder):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for part in ("train", "val", "test"):
        images, names = fixture_images(part)
        rows = ["filename,label"]
        for i, (image, name) in enumerate(zip(images, names)):
            file = f"{name}{i:08d}.png"
            picture = Image.fromarray(image)
            if part == "test" and i == 0:
                picture = picture.resize((100, 90))  # not 84x84: must be resized on load
            picture.save(folder / "images" / file)
            rows.append(f"{file},{name}")
        (folder / f"{part}.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPANA_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("protocol", [2, 5])
def test_pickle_format(tmp_path, protocol):
    write_pickles(tmp_path / "miniimagenet", protocol)
    splits = load_splits("miniimagenet", root=tmp_path)
    assert [splits[p].n_classes for p in ("train", "val", "test")] == [3, 2, 2]
    train = splits["train"]
    assert train.images.shape == (9, 3, 84, 84) and train.images.dtype == torch.uint8
    images, names = fixture_images("train")
    assert torch.equal(train.images, torch.from_numpy(images).permute(0, 3, 1, 2))
    assert [train.class_names[i] for i in train.labels] == names


def test_csv_format_matches_pickle_format(tmp_path):
    write_csvs(tmp_path / "csv" / "miniimagenet")
    write_pickles(tmp_path / "pkl" / "miniimagenet")
    from_csv = load_splits("miniimagenet", root=tmp_path / "csv")
    from_pkl = load_splits("miniimagenet", root=tmp_path / "pkl" / "miniimagenet")  # the folder itself works too
    for part in ("train", "val"):
        assert torch.equal(from_csv[part].images, from_pkl[part].images)
        assert torch.equal(from_csv[part].labels, from_pkl[part].labels)
    resized = from_csv["test"].images[0]
    assert resized.shape == (3, 84, 84) and not torch.equal(resized, from_pkl["test"].images[0])
    assert torch.equal(from_csv["test"].images[1:], from_pkl["test"].images[1:])
    again = load_splits("miniimagenet", root=tmp_path / "csv")  # from the cache
    assert torch.equal(again["train"].images, from_csv["train"].images)


def test_html_page_instead_of_pickle(tmp_path):
    write_pickles(tmp_path / "miniimagenet")
    page = b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>"
    (tmp_path / "miniimagenet" / PICKLE_FILES["val"]).write_bytes(page)
    with pytest.raises(DataError, match=r"mini-imagenet-cache-validation.pkl is an HTML page"):
        load_splits("miniimagenet", root=tmp_path)


def test_unsafe_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"image_data": Exploit()}))
    with pytest.raises(DataError, match=r"refusing to unpickle .*(posix|os)\.system"):
        safe_load(path)
    assert not marker.exists()


def test_truncated_pickle_and_wrong_content(tmp_path):
    write_pickles(tmp_path / "miniimagenet")
    target = tmp_path / "miniimagenet" / PICKLE_FILES["train"]
    target.write_bytes(target.read_bytes()[:5000])
    with pytest.raises(DataError, match="not a readable pickle .*truncated"):
        load_splits("miniimagenet", root=tmp_path)
    with open(target, "wb") as handle:
        pickle.dump({"images": np.zeros(3)}, handle)
    with pytest.raises(DataError, match="expected a dict with 'image_data' and 'class_dict'"):
        load_splits("miniimagenet", root=tmp_path)


def test_missing_and_wrong_layout(tmp_path):
    with pytest.raises(DataError, match="MiniImageNet not found .*train.csv"):
        load_splits("miniimagenet", root=tmp_path)
    write_csvs(tmp_path / "miniimagenet")
    first = sorted((tmp_path / "miniimagenet" / "images").iterdir())[0]
    first.unlink()
    with pytest.raises(DataError, match=f"image .*{first.name} listed in .*train.csv is missing"):
        load_splits("miniimagenet", root=tmp_path)
    (tmp_path / "miniimagenet" / "val.csv").write_text("path;class\nx.png;n1\n")
    write_csvs(tmp_path / "miniimagenet")
    (tmp_path / "miniimagenet" / "val.csv").write_text("path;class\nx.png;n1\n")
    with pytest.raises(DataError, match="must start with the header 'filename,label'"):
        load_splits("miniimagenet", root=tmp_path)
    with pytest.raises(InputError, match="one split, 'ravi'"):
        load_splits("miniimagenet", root=tmp_path, split="other")


def test_class_in_two_splits_is_reported(tmp_path):
    write_csvs(tmp_path / "miniimagenet")
    folder = tmp_path / "miniimagenet"
    (folder / "val.csv").write_text((folder / "train.csv").read_text())
    with pytest.raises(DataError, match="in both the train and val splits"):
        load_splits("miniimagenet", root=tmp_path)
