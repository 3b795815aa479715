"""MiniImageNet (Vinyals et al. 2016) with the Ravi & Larochelle (2017) split: 64 / 16 / 20 classes, 84x84 RGB.

Two on-disk formats are read from ``<data root>/miniimagenet`` (or that folder given directly):

1. Split CSVs ``train.csv``, ``val.csv``, ``test.csv`` (header ``filename,label``) with the images in
   ``images/``. Images are decoded with Pillow, converted to RGB and, when not already 84x84, resized
   to 84x84 with LANCZOS. The decoded arrays are cached on disk, keyed by the CSVs' sha256 and the
   images' names, sizes and modification times.
2. Pickled caches ``mini-imagenet-cache-{train,validation,test}.pkl``: a dict with ``image_data``
   uint8 ``(N, 84, 84, 3)`` and ``class_dict`` (class name -> list of indices into ``image_data``).
   They are read with :mod:`repana.data.safe_pickle` only (no code runs); an HTML page saved under
   the pickle's name (a failed cloud-drive download) is reported as such.

When both are present the pickles are used. Images are returned as uint8 ``(n, 3, 84, 84)``.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from repana.data.cache import cached_arrays, file_sha256
from repana.data.dataset import ImageClassDataset
from repana.data.safe_pickle import safe_load
from repana.errors import DataError, InputError
from repana.progress import progress

IMAGE_SIZE = 84
CSV_FILES = {"train": "train.csv", "val": "val.csv", "test": "test.csv"}
PICKLE_FILES = {"train": "mini-imagenet-cache-train.pkl", "val": "mini-imagenet-cache-validation.pkl",
                "test": "mini-imagenet-cache-test.pkl"}
EXPECTED_CLASSES = {"train": 64, "val": 16, "test": 20}  # the full Ravi & Larochelle split, 600 images each
HINT = ("put the Ravi & Larochelle split CSVs (train.csv, val.csv, test.csv) with an images/ folder, or the "
        "pickles mini-imagenet-cache-{train,validation,test}.pkl, in <data root>/miniimagenet")


def find_miniimagenet_folder(root) -> tuple[Path, str]:
    """``(folder, "pickle" | "csv")`` for ``<root>/miniimagenet`` or ``root`` itself."""
    root = Path(root).expanduser()
    for folder in (root / "miniimagenet", root):
        if all((folder / name).is_file() for name in PICKLE_FILES.values()):
            return folder, "pickle"
        if all((folder / name).is_file() for name in CSV_FILES.values()):
            if not (folder / "images").is_dir():
                raise DataError(f"{folder} has the split CSVs but no images/ folder; {HINT}")
            return folder, "csv"
    present = sorted(p.name for p in (root / "miniimagenet").glob("*")) if (root / "miniimagenet").is_dir() else []
    raise DataError(f"MiniImageNet not found under {root}" + (f" (found only: {', '.join(present)})" if present else "")
                    + f"; {HINT}. It cannot be downloaded automatically (ImageNet licence).")


def _from_pickle(path: Path, part: str) -> ImageClassDataset:
    data = safe_load(path)
    if not isinstance(data, dict) or "image_data" not in data or "class_dict" not in data:
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path} is not a MiniImageNet cache: expected a dict with 'image_data' and 'class_dict', "
                        f"got {keys}")
    images = np.asarray(data["image_data"])
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise DataError(f"{path}: image_data must be uint8 (N, 84, 84, 3), got {images.dtype} {images.shape}")
    class_names = sorted(data["class_dict"])
    labels = np.full(len(images), -1, dtype=np.int64)
    for label, name in enumerate(class_names):
        indices = np.asarray(data["class_dict"][name], dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(images)):
            raise DataError(f"{path}: class {name!r} lists image indices outside [0, {len(images)})")
        labels[indices] = label
    keep = np.flatnonzero(labels >= 0)
    return ImageClassDataset(torch.from_numpy(np.ascontiguousarray(images[keep].transpose(0, 3, 1, 2))),
                             torch.from_numpy(labels[keep]), class_names, f"miniimagenet/{part}")


def _read_csv(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["filename", "label"]:
        raise DataError(f"{path} must start with the header 'filename,label' (Ravi & Larochelle split CSV); "
                        f"got {rows[0] if rows else 'an empty file'}")
    body = [row for row in rows[1:] if row]
    bad = [row for row in body if len(row) < 2]
    if bad:
        raise DataError(f"{path}: rows need a filename and a label, e.g. {bad[0]}")
    return [(row[0].strip(), row[1].strip()) for row in body]


def _decode_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (IMAGE_SIZE, IMAGE_SIZE):
                image = image.resize((IMAGE_SIZE, IMAGE_SIZE), resample=Image.Resampling.LANCZOS)
            return np.asarray(image, dtype=np.uint8)
    except FileNotFoundError as error:
        raise DataError(f"image {path} listed in the split CSV is missing") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(f"cannot decode image {path} ({error}): it is corrupt") from error


def _from_csv(folder: Path, part: str, cache_dir, use_cache: bool) -> ImageClassDataset:
    csv_path = folder / CSV_FILES[part]
    rows = _read_csv(csv_path)
    images_dir = folder / "images"
    signature = []
    for name, _ in rows:
        file = images_dir / name
        if not file.is_file():
            raise DataError(f"image {file} listed in {csv_path} is missing; {HINT}")
        stat = file.stat()
        signature.append(f"{name}|{stat.st_size}|{stat.st_mtime_ns}")
    key = {"dataset": "miniimagenet", "csv": file_sha256(csv_path), "size": IMAGE_SIZE,
           "images": hashlib.sha256("\n".join(signature).encode()).hexdigest()}

    def build():
        decoded = [_decode_rgb(images_dir / name) for name, _ in progress(rows, desc=f"decoding {part}", unit="image")]
        return {"images": np.stack(decoded) if decoded else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)}

    images = cached_arrays(f"miniimagenet-{part}", key, build, cache_dir=cache_dir, use_cache=use_cache)["images"]
    class_names = sorted({label for _, label in rows})
    label_of = {name: i for i, name in enumerate(class_names)}
    labels = np.asarray([label_of[label] for _, label in rows], dtype=np.int64)
    return ImageClassDataset(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
                             torch.from_numpy(labels), class_names, f"miniimagenet/{part}")


def load_miniimagenet_splits(root=None, split: str = "ravi", cache_dir=None, use_cache: bool = True
                             ) -> dict[str, ImageClassDataset]:
    """``{"train", "val", "test"}`` MiniImageNet datasets (uint8 ``(n, 3, 84, 84)``) of the Ravi &
    Larochelle split. ``root``: the data root holding ``miniimagenet/`` (or that folder itself)."""
    from repana.paths import resolve_data_root

    if split != "ravi":
        raise InputError(f"MiniImageNet has one split, 'ravi' (Ravi & Larochelle 2017: 64/16/20 classes), "
                         f"got {split!r}")
    folder, kind = find_miniimagenet_folder(resolve_data_root(root))
    if kind == "pickle":
        splits = {part: _from_pickle(folder / PICKLE_FILES[part], part) for part in PICKLE_FILES}
    else:
        splits = {part: _from_csv(folder, part, cache_dir, use_cache) for part in CSV_FILES}
    seen: dict[str, str] = {}
    for part, ds in splits.items():
        for name in ds.class_names:
            if name in seen:
                raise DataError(f"MiniImageNet class {name} is in both the {seen[name]} and {part} splits of "
                                f"{folder}: the split files are mixed up")
            seen[name] = part
    return splits
