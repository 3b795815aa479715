"""Omniglot: archive reading (zip and folder), preprocessing, rotations, splits, bad input, real-data counts."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from repana.cli import main
from repana.data import EpisodeSampler, load_splits
from repana.data.omniglot import OmniglotCharacters, load_characters, split_characters
from repana.errors import DataError, InputError

# Characters per alphabet of the full Omniglot (background: 964, evaluation: 659 characters).
BACKGROUND = {"Alphabet_of_the_Magi": 20, "Anglo-Saxon_Futhorc": 29, "Arcadian": 26, "Armenian": 41,
              "Asomtavruli_(Georgian)": 40, "Balinese": 24, "Bengali": 46,
              "Blackfoot_(Canadian_Aboriginal_Syllabics)": 14, "Braille": 26, "Burmese_(Myanmar)": 34,
              "Cyrillic": 33, "Early_Aramaic": 22, "Futurama": 26, "Grantha": 43, "Greek": 24, "Gujarati": 48,
              "Hebrew": 22, "Inuktitut_(Canadian_Aboriginal_Syllabics)": 16, "Japanese_(hiragana)": 52,
              "Japanese_(katakana)": 47, "Korean": 40, "Latin": 26, "Malay_(Jawi_-_Arabic)": 40,
              "Mkhedruli_(Georgian)": 41, "N_Ko": 33, "Ojibwe_(Canadian_Aboriginal_Syllabics)": 14, "Sanskrit": 42,
              "Syriac_(Estrangelo)": 23, "Tagalog": 17, "Tifinagh": 55}
EVALUATION = {"Angelic": 20, "Atemayar_Qelisayer": 26, "Atlantean": 26, "Aurek-Besh": 26, "Avesta": 26, "Ge_ez": 26,
              "Glagolitic": 45, "Gurmukhi": 45, "Kannada": 41, "Keble": 26, "Malayalam": 47, "Manipuri": 40,
              "Mongolian": 30, "Old_Church_Slavonic_(Cyrillic)": 45, "Oriya": 46, "Sylheti": 28, "Syriac_(Serto)": 23,
              "Tengwar": 25, "Tibetan": 42, "ULOG": 26}


def full_character_list() -> OmniglotCharacters:
    """Names and archives of all 1623 characters (no images: the split functions only read names)."""
    names, archives = [], []
    for stem, alphabets in (("images_background", BACKGROUND), ("images_evaluation", EVALUATION)):
        for alphabet, count in alphabets.items():
            names += [f"{alphabet}/character{i:02d}" for i in range(1, count + 1)]
            archives += [stem] * count
    return OmniglotCharacters(np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64), names, archives)


def draw_character(alphabet_index: int, character: int, drawer: int) -> bytes:
    """A 105x105 one-bit PNG, black strokes on white as in Omniglot: an L-shape (not symmetric under
    any rotation) whose size depends on the character, shifted a little per drawer."""
    image = Image.new("1", (105, 105), 1)
    draw = ImageDraw.Draw(image)
    size = 30 + 8 * character + 3 * alphabet_index
    x0, y0 = 20 + drawer, 15 + drawer
    draw.line([(x0, y0), (x0, y0 + size)], fill=0, width=8)
    draw.line([(x0, y0 + size), (x0 + size // 2, y0 + size)], fill=0, width=8)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def build_archive(folder: Path, stem: str, alphabets: dict[str, int], drawers: int = 4, zipped: bool = True) -> Path:
    """An archive in the official layout: <stem>/<Alphabet>/characterNN/<id>_<drawer>.png."""
    files = {}
    for a, (alphabet, count) in enumerate(sorted(alphabets.items())):
        for c in range(1, count + 1):
            for d in range(1, drawers + 1):
                files[f"{stem}/{alphabet}/character{c:02d}/{100 * a + c:04d}_{d:02d}.png"] = draw_character(a, c, d)
    if zipped:
        path = folder / f"{stem}.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in files.items():
                archive.writestr(name, data)
        return path
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder / stem


@pytest.fixture
def tiny_root(tmp_path, monkeypatch) -> Path:
    """A data root with two small archives sharing the alphabet 'Shared' (as Greek/Latin in the real ones)."""
    monkeypatch.setenv("REPANA_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "data" / "omniglot"
    folder.mkdir(parents=True)
    build_archive(folder, "images_background_small1", {"Alpha": 3, "Shared": 2})
    build_archive(folder, "images_background_small2", {"Beta": 4, "Shared": 2})
    return tmp_path / "data"


def test_tiny_archives_decode_dedup_and_rotate(tiny_root):
    splits = load_splits("omniglot", root=tiny_root, split="alphabets", test_alphabets=["Beta"], val_fraction=0.0,
                         rotations="train")
    train, test = splits["train"], splits["test"]
    assert len(splits["val"]) == 0
    # Alpha (3) + Shared (2, present in both archives, kept once) = 5 characters x 4 rotations
    assert train.n_classes == 20 and len(train) == 80 and train.image_shape == (1, 28, 28)
    assert test.n_classes == 4 and test.class_names[0] == "Beta/character01/rot000"
    assert train.images.dtype == torch.uint8
    # inverted: strokes bright, background 0; LANCZOS gives grey edge levels
    image = train.images[0, 0].numpy()
    assert image.max() >= 250 and np.median(image) == 0 and len(np.unique(image)) > 3
    # rotated classes are the base class rotated by 90 degrees counter-clockwise, every image alike
    names = train.class_names
    for k in (1, 2, 3):
        base = train.images[train.labels == names.index("Alpha/character02/rot000")]
        turned = train.images[train.labels == names.index(f"Alpha/character02/rot{90 * k:03d}")]
        assert torch.equal(turned, torch.rot90(base, k, dims=(2, 3)))
        assert not torch.equal(turned, base)


def test_zipped_and_extracted_archives_give_the_same_arrays(tmp_path, tiny_root):
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    build_archive(extracted, "images_background_small1", {"Alpha": 3, "Shared": 2}, zipped=False)
    build_archive(extracted, "images_background_small2", {"Beta": 4, "Shared": 2}, zipped=False)
    from_zip = load_characters(tiny_root / "omniglot", use_cache=False)
    from_dir = load_characters(extracted, use_cache=False)
    assert from_zip.names == from_dir.names == sorted(from_zip.names)
    assert np.array_equal(from_zip.images, from_dir.images)


def test_cache_is_reused_and_keyed_by_archive_checksum(tiny_root, tmp_path):
    cache = tmp_path / "cache"
    first = load_characters(tiny_root / "omniglot", cache_dir=cache)
    files = sorted(cache.glob("omniglot-*.npz"))
    assert len(files) == 1
    again = load_characters(tiny_root / "omniglot", cache_dir=cache)
    assert np.array_equal(first.images, again.images) and sorted(cache.glob("omniglot-*.npz")) == files
    build_archive(tiny_root / "omniglot", "images_background_small2", {"Beta": 5, "Shared": 2})  # new content
    changed = load_characters(tiny_root / "omniglot", cache_dir=cache)
    assert len(changed.names) == len(first.names) + 1 and len(list(cache.glob("omniglot-*.npz"))) == 2


def test_missing_wrong_layout_and_corrupt_archives(tmp_path, tiny_root):
    with pytest.raises(DataError, match="repana data download omniglot"):
        load_splits("omniglot", root=tmp_path / "nowhere")
    bad = tmp_path / "bad" / "omniglot"
    (bad / "Greek" / "character01").mkdir(parents=True)  # alphabets without the archive folder
    with pytest.raises(DataError, match=r"holds no official Omniglot archive \(found: Greek\)"):
        load_splits("omniglot", root=tmp_path / "bad")
    with zipfile.ZipFile(bad / "images_background.zip", "w") as archive:
        archive.writestr("images_background/Alpha/0001_01.png", draw_character(0, 1, 1))
    with pytest.raises(DataError, match=r"unexpected file .*characterNN"):
        load_splits("omniglot", root=tmp_path / "bad", use_cache=False)
    data = (tiny_root / "omniglot" / "images_background_small1.zip").read_bytes()
    (bad / "images_background.zip").write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(DataError, match=r"images_background.zip is not a readable zip archive"):
        load_splits("omniglot", root=tmp_path / "bad", use_cache=False)


def test_alphabets_split_errors(tiny_root):
    with pytest.raises(InputError, match="alphabets not found .*Gamma.*present: Alpha, Beta, Shared"):
        load_splits("omniglot", root=tiny_root, split="alphabets", test_alphabets=["Gamma"])
    with pytest.raises(InputError, match="needs test_alphabets"):
        load_splits("omniglot", root=tiny_root, split="alphabets")
    with pytest.raises(InputError, match="unknown Omniglot split 'nope'"):
        load_splits("omniglot", root=tiny_root, split="nope")
    with pytest.raises(InputError, match="rotations must be one of"):
        load_splits("omniglot", root=tiny_root, rotations="sometimes")


def test_full_omniglot_split_counts():
    chars = full_character_list()
    assert len(chars.names) == 1623 and sum(BACKGROUND.values()) == 964 and sum(EVALUATION.values()) == 659
    maml = split_characters(chars, "maml", seed=1)
    assert [len(maml[p]) for p in ("train", "val", "test")] == [1100, 100, 423]
    vinyals = split_characters(chars, "vinyals")
    assert [len(vinyals[p]) for p in ("train", "val", "test")] == [1028, 172, 423]
    assert "Gurmukhi/character42" in vinyals["test"] and "Gurmukhi/character41" in vinyals["train"]
    official = split_characters(chars, "background-evaluation", val_fraction=0.1)
    assert len(official["test"]) == 659 and len(official["train"]) + len(official["val"]) == 964
    assert split_characters(chars, "auto") == maml
    for split in (maml, vinyals, official):
        assert not set(split["train"]) & set(split["test"]) and not set(split["val"]) & set(split["test"])
        assert len(set(split["train"]) | set(split["val"]) | set(split["test"])) == 1623


def test_maml_split_is_stable_across_runs_and_proportional():
    chars = full_character_list()
    maml = split_characters(chars, "maml", seed=1)
    assert maml == split_characters(chars, "maml", seed=1)
    assert maml != split_characters(chars, "maml", seed=2)
    # pinned: a change of this digest means every published number on this split moves
    digest = hashlib.sha256("\n".join(maml["test"]).encode()).hexdigest()[:16]
    assert digest == PINNED_MAML_TEST_DIGEST
    small = OmniglotCharacters(chars.images, chars.character, chars.names[:242], chars.archives[:242])
    counts = [len(v) for v in split_characters(small, "maml").values()]
    assert counts == [242 - 15 - 63, 15, 63]  # round(242 * 100/1623) = 15, round(242 * 423/1623) = 63


PINNED_MAML_TEST_DIGEST = "b56e1f4aee521667"  # sha256[:16] of the sorted test names, seed 1


def test_cli_info_and_show(tiny_root, tmp_path, capsys):
    assert main(["data", "info", "omniglot", "--data-root", str(tiny_root), "--split", "alphabets",
                 "--test-alphabets", "Beta", "--rotations", "none"]) == 0
    out = capsys.readouterr().out
    assert "test          4       16" in out
    png = tmp_path / "episode.png"
    assert main(["data", "show", "omniglot", "--data-root", str(tiny_root), "--split", "alphabets",
                 "--test-alphabets", "Beta", "--part", "test", "--ways", "3", "--queries", "2",
                 "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "info", "omniglot", "--data-root", str(tmp_path / "none")]) == 1
    assert "repana data download omniglot" in capsys.readouterr().err


# ----- the real subset (../shared/data/omniglot or REPANA_DATA_ROOT) -----

@pytest.fixture(scope="module")
def real_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("omniglot-cache")


@pytest.mark.data
def test_real_subset_counts(omniglot_root, real_cache):
    chars = load_characters(omniglot_root, cache_dir=real_cache)
    assert len(chars.names) == 242 and len(chars.images) == 4840
    assert chars.alphabets == ["Balinese", "Early_Aramaic", "Greek", "Japanese_(katakana)", "Korean", "Latin",
                               "Sanskrit", "Tagalog"]
    assert np.bincount(chars.character).tolist() == [20] * 242
    splits = load_splits("omniglot", root=omniglot_root, cache_dir=real_cache)  # default: split "subset"
    train, val, test = splits["train"], splits["val"], splits["test"]
    assert (test.n_classes, len(test)) == (106, 2120)
    assert {n.split("/")[0] for n in test.class_names} == {"Japanese_(katakana)", "Sanskrit", "Tagalog"}
    assert (val.n_classes, len(val)) == (14, 280)
    assert (train.n_classes, len(train)) == (122 * 4, 122 * 4 * 20)
    train_chars = {n.rsplit("/", 1)[0] for n in train.class_names}
    val_chars = {n.rsplit("/", 1)[0] for n in val.class_names}
    assert len(train_chars) == 122 and not train_chars & val_chars
    assert {n.split("/")[0] for n in train_chars | val_chars} == {"Balinese", "Early_Aramaic", "Greek", "Korean",
                                                                    "Latin"}
    # strokes are 1 after /255: the background is 0, the ink mass small
    ink = train.images.float().mean().item() / 255
    assert 0.05 < ink < 0.3 and int(torch.median(train.images.float())) == 0
    batch = EpisodeSampler(test, ways=20, shots=1, queries=15, seed=0).sample(2)
    assert batch.support_x.shape == (2, 20, 1, 28, 28) and batch.query_x.shape == (2, 300, 1, 28, 28)


@pytest.mark.data
def test_real_subset_rotations_and_other_splits(omniglot_root, real_cache):
    splits = load_splits("omniglot", root=omniglot_root, split="subset", rotations="all", cache_dir=real_cache)
    test = splits["test"]
    assert test.n_classes == 424
    base = test.images[test.labels == test.class_names.index("Tagalog/character05/rot000")]
    turned = test.images[test.labels == test.class_names.index("Tagalog/character05/rot180")]
    assert torch.equal(turned, torch.rot90(base, 2, dims=(2, 3)))
    maml = load_splits("omniglot", root=omniglot_root, split="maml", rotations="none", cache_dir=real_cache)
    assert [maml[p].n_classes for p in ("train", "val", "test")] == [164, 15, 63]
    vinyals = load_splits("omniglot", root=omniglot_root, split="vinyals", rotations="none", cache_dir=real_cache)
    assert [vinyals[p].n_classes for p in ("train", "val", "test")] == [220, 22, 0]  # val: Early_Aramaic


def test_maml_resampling_gives_the_binary_pixels_of_the_maml_code(tiny_root):
    lanczos = load_characters(tiny_root / "omniglot", use_cache=False)
    maml = load_characters(tiny_root / "omniglot", use_cache=False, resample="maml")
    assert set(np.unique(maml.images).tolist()) == {0, 255}  # Pillow resizes 1-bit images by nearest neighbour
    assert len(np.unique(lanczos.images)) > 10
    # same strokes: where LANCZOS is clearly ink or clearly background, nearest neighbour mostly agrees
    sure = (lanczos.images > 200) | (lanczos.images < 20)
    agree = (maml.images[sure] > 127) == (lanczos.images[sure] > 127)
    assert agree.mean() > 0.95
    with pytest.raises(InputError, match="resample must be one of lanczos, maml"):
        load_characters(tiny_root / "omniglot", resample="bicubic")
