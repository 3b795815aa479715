"""``load_splits(name, root, split, **options)``: one entry point for every dataset.

``root`` is the data root (``--data-root`` > ``REPANA_DATA_ROOT`` > ``~/.cache/repana/data``); each
dataset lives in its own sub-folder, ``<root>/omniglot`` and ``<root>/miniimagenet`` (a folder that
holds a dataset's files directly is accepted too). Glyphs are generated and need no files.
"""

from __future__ import annotations

from typing import Callable

from repana.data.dataset import ImageClassDataset
from repana.errors import InputError


def _loaders() -> dict[str, Callable[..., dict[str, ImageClassDataset]]]:
    from repana.data.glyphs import load_glyph_splits
    from repana.data.miniimagenet import load_miniimagenet_splits
    from repana.data.omniglot import load_omniglot_splits

    return {"glyphs": load_glyph_splits, "omniglot": load_omniglot_splits, "miniimagenet": load_miniimagenet_splits}


DATASETS = ("glyphs", "omniglot", "miniimagenet")
DEFAULT_SPLITS = {"glyphs": "default", "omniglot": "auto", "miniimagenet": "ravi"}


def list_datasets() -> list[str]:
    return list(DATASETS)


def check_dataset_files(name: str, root=None):
    """The folder holding dataset ``name``'s files under the data ``root`` (None for glyphs, which are
    generated); a :class:`repana.errors.DataError` naming what is missing otherwise. Reads no image: the
    check a plan makes before it writes jobs that would all load this data."""
    from repana.paths import resolve_data_root

    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "glyphs":
        return None
    root = resolve_data_root(root)
    if name == "omniglot":
        from repana.data.omniglot import find_omniglot_folder

        return find_omniglot_folder(root)
    from repana.data.miniimagenet import find_miniimagenet_folder

    return find_miniimagenet_folder(root)[0]


def load_splits(name: str, root=None, split: str | None = None, **options) -> dict[str, ImageClassDataset]:
    """``{"train", "val", "test"}`` :class:`ImageClassDataset` of dataset ``name``.

    ``split``: None for the dataset's default (glyphs ``"default"``; omniglot ``"auto"``: ``"maml"`` on
    the full archives, ``"subset"`` on the small ones; miniimagenet ``"ravi"``). ``options`` go to the
    dataset's loader: :func:`repana.data.omniglot.load_omniglot_splits` (rotations, seed,
    val_fraction, test_alphabets, val_alphabets), :func:`repana.data.glyphs.load_glyph_splits`
    (n_train, n_val, n_test, n_drawers, seed); all take ``cache_dir`` and ``use_cache``.
    """
    loaders = _loaders()
    if name not in loaders:
        raise InputError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    try:
        return loaders[name](root=root, split=split or DEFAULT_SPLITS[name], **options)
    except TypeError as error:
        if "unexpected keyword argument" in str(error):
            raise InputError(f"dataset {name!r}: {error}") from error
        raise
