"""Omniglot (Lake et al. 2015) from its official archives, zipped or extracted, with the standard splits.

Archives: ``images_background``, ``images_evaluation`` (the full 964 + 659 characters) and the
``images_background_small1`` / ``small2`` subsets, each as ``<stem>.zip`` or an extracted ``<stem>/``
folder in the Omniglot folder, in the official layout
``<stem>/<Alphabet>/characterNN/<id>_<drawer>.png`` (105x105, one bit). A character present in
several archives (Greek and Latin are in both small archives) is kept once.

Preprocessing (``resample="lanczos"``, default): each PNG is converted to 8-bit grey and resized
to 28x28 with Pillow's LANCZOS filter (the old ``ANTIALIAS``, the filter the MAML code asks for),
then inverted so that strokes are 255 (1.0 after /255) and the background 0. ``resample="maml"``
reproduces the MAML code's pixels exactly: its ``resize_images.py`` resizes the 1-bit PNG itself,
for which Pillow ignores the filter and uses nearest neighbour, giving binary 0/255 images. The
decoded arrays are cached on disk, keyed by the archives' sha256 and these options.

Rotated classes: ``rotations`` adds each character rotated by 90, 180 and 270 degrees
(counter-clockwise, ``np.rot90``) as three more classes, every image of a rotated class rotated the
same way (Santoro et al. 2016; Finn et al. 2017). Default ``"train"``: on the training split only.

Splits (``split=``), all over the union of characters found:

- ``"maml"``: a seeded shuffle of all characters (``seed``, default 1), then 1100 train / 100 val /
  423 test on the full 1623 characters. On other numbers ``n`` of characters the proportions are
  kept: ``n_val = round(n * 100 / 1623)``, ``n_test = round(n * 423 / 1623)``, train the rest.
- ``"vinyals"``: Vinyals et al. (2016), as distributed with Prototypical Networks
  (``splits/vinyals/val.txt``) and torchmeta (``assets/omniglot/test.json``): val = the alphabets
  Armenian, Bengali, Early_Aramaic, Hebrew, Mkhedruli_(Georgian) (172 characters); test =
  Gurmukhi characters 42-45 and the 12 evaluation alphabets after it in alphabetical order
  (423 characters, i.e. the last 423 of the 1623 in archive / alphabet / character order); train =
  the other 1028. On a subset of archives, whatever of those is present.
- ``"background-evaluation"``: the official split: background archives train, evaluation archive
  test; val = a seeded ``val_fraction`` of the training characters.
- ``"alphabets"``: ``test_alphabets`` (required) and ``val_alphabets`` by name; without
  ``val_alphabets``, val = a seeded ``val_fraction`` (default 0.1) of the remaining characters.
- ``"subset"``: the split of the shared small-archive subset: ``"alphabets"`` with test alphabets
  Japanese_(katakana), Sanskrit, Tagalog (106 characters); of the other 136 characters (Balinese,
  Early_Aramaic, Greek, Korean, Latin) a seeded 10% (14) is val and 122 train (x4 with rotations).
- ``"auto"`` (default): ``"maml"`` when all 1623 characters are present, else ``"subset"``.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from repana.data.cache import cached_arrays, file_sha256, folder_signature
from repana.data.dataset import ImageClassDataset
from repana.errors import DataError, InputError
from repana.progress import progress

ARCHIVE_STEMS = ("images_background", "images_evaluation", "images_background_small1", "images_background_small2")
FULL_CHARACTERS = 1623
MAML_COUNTS = {"val": 100, "test": 423}  # of 1623; train = the rest (1100)
VINYALS_VAL_ALPHABETS = ("Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)")
VINYALS_TEST_ALPHABETS = ("Kannada", "Keble", "Malayalam", "Manipuri", "Mongolian", "Old_Church_Slavonic_(Cyrillic)",
                          "Oriya", "Sylheti", "Syriac_(Serto)", "Tengwar", "Tibetan", "ULOG")
VINYALS_TEST_EXTRA = tuple(f"Gurmukhi/character{n}" for n in (42, 43, 44, 45))
SUBSET_TEST_ALPHABETS = ("Japanese_(katakana)", "Sanskrit", "Tagalog")
SPLITS = ("auto", "maml", "vinyals", "background-evaluation", "alphabets", "subset")
ROTATIONS = {"train": ("train",), "all": ("train", "val", "test"), "none": ()}
IMAGE_SIZE = 28
_PATH = re.compile(r"^(?P<stem>[^/]+)/(?P<alphabet>[^/]+)/(?P<character>character\d+)/(?P<file>\d+_\d+\.png)$")
DOWNLOAD_HINT = "download it with `repana data download omniglot --root DATA_ROOT` (or set REPANA_DATA_ROOT)"


@dataclass
class OmniglotCharacters:
    """Decoded Omniglot: images uint8 ``(n_images, 28, 28)`` (strokes 255), character int64
    ``(n_images,)`` indexing ``names`` (``"Alphabet/characterNN"``), ``archives[i]`` the stem each
    character came from."""

    images: np.ndarray
    character: np.ndarray
    names: list[str]
    archives: list[str]

    @property
    def alphabets(self) -> list[str]:
        return sorted({name.split("/")[0] for name in self.names})


def find_omniglot_folder(root) -> Path:
    """The folder holding the archives: ``<root>/omniglot``, or ``root`` itself when it holds them."""
    root = Path(root).expanduser()
    for folder in (root / "omniglot", root):
        if folder.is_dir() and find_archives(folder):
            return folder
    if (root / "omniglot").is_dir():
        present = sorted(p.name for p in (root / "omniglot").iterdir())[:8]
        raise DataError(f"{root / 'omniglot'} holds no official Omniglot archive "
                        f"(found: {', '.join(present) or 'nothing'}); "
                        f"expected images_background.zip, images_evaluation.zip or images_background_small1/2.zip, "
                        f"zipped or extracted as <archive>/<Alphabet>/characterNN/<id>_<drawer>.png; {DOWNLOAD_HINT}")
    raise DataError(f"Omniglot not found under {root}: expected {root / 'omniglot'} with "
                    f"images_background.zip / images_evaluation.zip (or the small1/small2 subsets), zipped or "
                    f"extracted; {DOWNLOAD_HINT}")


def find_archives(folder: Path) -> dict[str, Path]:
    """``{stem: path}`` of the official archives in ``folder`` (a zip is preferred to a folder)."""
    found = {}
    for stem in ARCHIVE_STEMS:
        for candidate in (folder / f"{stem}.zip", folder / stem):
            if candidate.exists():
                found[stem] = candidate
                break
    return found


def _archive_members(path: Path) -> list[tuple[str, str, str, callable]]:
    """``(alphabet, character, drawing file, read() -> bytes)`` of every PNG of an archive."""
    stem = path.name[:-4] if path.suffix == ".zip" else path.name
    members = []
    if path.suffix == ".zip":
        try:
            handle = zipfile.ZipFile(path)
            names = handle.namelist()
        except (zipfile.BadZipFile, OSError) as error:
            raise DataError(f"{path} is not a readable zip archive ({error}): it is truncated or corrupt; "
                            f"delete it and {DOWNLOAD_HINT}") from error
        for name in names:
            if name.endswith("/") or "__MACOSX" in name or not name.lower().endswith(".png"):
                continue
            members.append((name, lambda n=name: handle.read(n)))
    else:
        for file in sorted(path.rglob("*.png")):
            members.append((f"{stem}/{file.relative_to(path).as_posix()}", file.read_bytes))
    parsed = []
    for name, read in members:
        match = _PATH.match(name)
        if not match or match["stem"] != stem:
            raise DataError(f"unexpected file {name!r} in {path}: Omniglot archives must have the layout "
                            f"{stem}/<Alphabet>/characterNN/<id>_<drawer>.png")
        parsed.append((match["alphabet"], match["character"], match["file"], read))
    if not parsed:
        raise DataError(f"{path} holds no Omniglot images (expected {stem}/<Alphabet>/characterNN/*.png)")
    return parsed


RESAMPLE = ("lanczos", "maml")


def _decode(data: bytes, where: str, resample: str = "lanczos") -> np.ndarray:
    """PNG bytes -> uint8 (28, 28), strokes 255: (grey,) LANCZOS resize, invert (see module docstring)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            source = image.convert("L") if resample == "lanczos" else image  # "maml": the 1-bit image as is
            grey = source.resize((IMAGE_SIZE, IMAGE_SIZE), resample=Image.Resampling.LANCZOS).convert("L")
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(f"cannot decode image {where} ({error}): the archive is corrupt; re-download it") from error
    return 255 - np.asarray(grey, dtype=np.uint8)


def read_characters(folder: Path, archives: dict[str, Path], resample: str = "lanczos") -> OmniglotCharacters:
    """Decode every character of ``archives``, each (alphabet, character) once, in sorted order."""
    seen: dict[str, tuple[str, list]] = {}
    for stem, path in archives.items():
        by_character: dict[str, list] = {}
        for alphabet, character, file, read in _archive_members(path):
            by_character.setdefault(f"{alphabet}/{character}", []).append((file, read))
        for name, drawings in by_character.items():
            seen.setdefault(name, (stem, drawings))  # first archive wins: duplicates are identical
    names = sorted(seen)
    images, character = [], []
    for index, name in enumerate(progress(names, desc="decoding Omniglot", unit="character")):
        stem, drawings = seen[name]
        for file, read in sorted(drawings, key=lambda d: d[0]):
            images.append(_decode(read(), f"{stem}/{name}/{file}", resample))
            character.append(index)
    return OmniglotCharacters(np.stack(images), np.asarray(character, dtype=np.int64), names,
                              [seen[n][0] for n in names])


def load_characters(folder, cache_dir=None, use_cache: bool = True, resample: str = "lanczos") -> OmniglotCharacters:
    """Decoded characters of every archive in ``folder``, through the on-disk cache."""
    if resample not in RESAMPLE:
        raise InputError(f"resample must be one of {', '.join(RESAMPLE)}, got {resample!r}")
    folder = Path(folder)
    archives = find_archives(folder)
    if not archives:
        raise DataError(f"no Omniglot archives in {folder}; {DOWNLOAD_HINT}")
    sources = {stem: (file_sha256(p) if p.is_file() else "dir:" + folder_signature(p)) for stem, p in archives.items()}
    key = {"dataset": "omniglot", "sources": sources, "size": IMAGE_SIZE, "resample": resample, "invert": True}

    def build():
        chars = read_characters(folder, archives, resample)
        return {"images": chars.images, "character": chars.character, "names": np.array(chars.names),
                "archives": np.array(chars.archives)}

    arrays = cached_arrays("omniglot", key, build, cache_dir=cache_dir, use_cache=use_cache)
    return OmniglotCharacters(arrays["images"], arrays["character"].astype(np.int64),
                              [str(n) for n in arrays["names"]], [str(a) for a in arrays["archives"]])


def _proportional(n: int, count: int) -> int:
    return int(round(n * count / FULL_CHARACTERS))


def _seeded_holdout(names: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(rest, held out): a seeded ``round(fraction * len)`` of ``names`` held out, both kept sorted."""
    if not 0 <= fraction < 1:
        raise InputError(f"val_fraction must be in [0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(names))
    n_held = int(round(fraction * len(names)))
    held = {names[i] for i in order[:n_held]}
    return [n for n in names if n not in held], sorted(held)


def split_characters(chars: OmniglotCharacters, split: str = "auto", seed: int = 1, val_fraction: float = 0.1,
                     test_alphabets=None, val_alphabets=None) -> dict[str, list[str]]:
    """``{"train", "val", "test"}`` -> sorted character names of each split (see the module docstring)."""
    names = sorted(chars.names)
    if split not in SPLITS:
        raise InputError(f"unknown Omniglot split {split!r}; choose one of {', '.join(SPLITS)}")
    if split == "auto":
        split = "maml" if len(names) == FULL_CHARACTERS else "subset"
    alphabet_of = {n: n.split("/")[0] for n in names}
    if split == "maml":
        order = np.random.default_rng(seed).permutation(len(names))
        n_val, n_test = _proportional(len(names), MAML_COUNTS["val"]), _proportional(len(names), MAML_COUNTS["test"])
        n_train = len(names) - n_val - n_test
        shuffled = [names[i] for i in order]
        return {"train": sorted(shuffled[:n_train]), "val": sorted(shuffled[n_train:n_train + n_val]),
                "test": sorted(shuffled[n_train + n_val:])}
    if split == "vinyals":
        val = [n for n in names if alphabet_of[n] in VINYALS_VAL_ALPHABETS]
        test = [n for n in names if alphabet_of[n] in VINYALS_TEST_ALPHABETS or n in VINYALS_TEST_EXTRA]
        taken = set(val) | set(test)
        return {"train": [n for n in names if n not in taken], "val": val, "test": test}
    if split == "background-evaluation":
        stem_of = dict(zip(chars.names, chars.archives))
        test = [n for n in names if stem_of[n] == "images_evaluation"]
        train, val = _seeded_holdout([n for n in names if stem_of[n] != "images_evaluation"], val_fraction, seed)
        return {"train": train, "val": val, "test": test}
    if split == "subset":
        test_alphabets, val_alphabets = SUBSET_TEST_ALPHABETS, None
    if test_alphabets is None:
        raise InputError("split='alphabets' needs test_alphabets=[...] (and optionally val_alphabets=[...]); "
                         f"alphabets present: {', '.join(chars.alphabets)}")
    test_alphabets = [test_alphabets] if isinstance(test_alphabets, str) else list(test_alphabets)
    val_alphabets = [val_alphabets] if isinstance(val_alphabets, str) else list(val_alphabets or [])
    missing = [a for a in test_alphabets + val_alphabets if a not in chars.alphabets]
    if missing:
        raise InputError(f"alphabets not found in the Omniglot archives: {', '.join(missing)}; "
                         f"present: {', '.join(chars.alphabets)}")
    if set(test_alphabets) & set(val_alphabets):
        raise InputError(f"alphabets both in test and val: {sorted(set(test_alphabets) & set(val_alphabets))}")
    test = [n for n in names if alphabet_of[n] in test_alphabets]
    rest = [n for n in names if alphabet_of[n] not in test_alphabets]
    if val_alphabets:
        val = [n for n in rest if alphabet_of[n] in val_alphabets]
        train = [n for n in rest if alphabet_of[n] not in val_alphabets]
    else:
        train, val = _seeded_holdout(rest, val_fraction, seed)
    return {"train": train, "val": val, "test": test}


def build_dataset(chars: OmniglotCharacters, character_names: list[str], rotate: bool, name: str) -> ImageClassDataset:
    """An :class:`ImageClassDataset` of ``character_names`` (uint8 (n, 1, 28, 28)); with ``rotate``,
    classes ``name/rot000, rot090, rot180, rot270`` for each character, else ``name/rot000``."""
    index_of = {n: i for i, n in enumerate(chars.names)}
    ids = np.asarray([index_of[n] for n in character_names], dtype=np.int64)
    wanted = np.full(len(chars.names), -1, dtype=np.int64)
    wanted[ids] = np.arange(len(ids))
    local = wanted[chars.character]
    keep = np.flatnonzero(local >= 0)
    keep = keep[np.argsort(local[keep], kind="stable")]
    base_images, base_labels = chars.images[keep], local[keep]
    turns = (0, 1, 2, 3) if rotate else (0,)
    images = np.concatenate([np.rot90(base_images, k, axes=(1, 2)) for k in turns])
    labels = np.concatenate([base_labels * len(turns) + t for t in range(len(turns))])
    class_names = [f"{c}/rot{90 * k:03d}" for c in character_names for k in turns]
    return ImageClassDataset(torch.from_numpy(np.ascontiguousarray(images[:, None])), torch.from_numpy(labels),
                             class_names, name)


def load_omniglot_splits(root=None, split: str = "auto", rotations: str | bool = "train", seed: int = 1,
                         val_fraction: float = 0.1, test_alphabets=None, val_alphabets=None,
                         resample: str = "lanczos", cache_dir=None, use_cache: bool = True
                         ) -> dict[str, ImageClassDataset]:
    """``{"train", "val", "test"}`` Omniglot datasets. ``root``: the data root holding ``omniglot/``
    (or the Omniglot folder itself). ``rotations``: ``"train"`` | ``"all"`` | ``"none"`` (or bool:
    True = "all", False = "none"). ``resample``: ``"lanczos"`` | ``"maml"`` (see module docstring)."""
    from repana.paths import resolve_data_root

    if isinstance(rotations, bool):
        rotations = "all" if rotations else "none"
    if rotations not in ROTATIONS:
        raise InputError(f"rotations must be one of {', '.join(ROTATIONS)} (or a bool), got {rotations!r}")
    folder = find_omniglot_folder(resolve_data_root(root))
    chars = load_characters(folder, cache_dir=cache_dir, use_cache=use_cache, resample=resample)
    parts = split_characters(chars, split, seed=seed, val_fraction=val_fraction, test_alphabets=test_alphabets,
                             val_alphabets=val_alphabets)
    label = split if split != "auto" else ("maml" if len(chars.names) == FULL_CHARACTERS else "subset")
    return {part: build_dataset(chars, names, part in ROTATIONS[rotations], f"omniglot/{label}/{part}")
            for part, names in parts.items()}
