"""repana.data.images: every image mode read by its real range, from real files written by Pillow.

Images are 4x4 and read at size 4 (no resize), so each assertion is on exact pixel values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from repana.data.images import load_image, read_image_folder
from repana.errors import InputError


def _grey(path, channels=1, invert="no", background="white", size=4):
    return load_image(path, channels, size, invert=invert, background=background).numpy()


def test_rgba_with_transparent_background_reads_as_paper_not_ink(tmp_path):
    """Black strokes on a fully transparent background (whose hidden colour is black, as most
    editors save it): the background must come out white, the strokes black; with invert auto the
    Omniglot convention follows (strokes 1, background 0)."""
    pixels = np.zeros((4, 4, 4), np.uint8)        # transparent black everywhere
    pixels[1, :, 3] = 255                           # row 1: opaque black stroke
    pixels[2, 0] = (255, 255, 255, 128)             # half-transparent white over white: white
    Image.fromarray(pixels, mode="RGBA").save(tmp_path / "a.png")
    grey = _grey(tmp_path / "a.png")[0]
    expected = np.ones((4, 4))
    expected[1] = 0.0
    np.testing.assert_allclose(grey, expected, atol=1e-6)
    omniglot = _grey(tmp_path / "a.png", invert="auto")[0]
    np.testing.assert_allclose(omniglot, 1 - expected, atol=1e-6)
    # on black, the transparent background is black and the half-transparent white pixel grey
    on_black = _grey(tmp_path / "a.png", background="black")[0]
    assert on_black[0, 0] == 0.0 and on_black[2, 0] == pytest.approx(128 / 255, abs=1e-6)


def test_rgba_colour_composited_exactly(tmp_path):
    pixels = np.array([[[200, 100, 50, 51]]], np.uint8).repeat(4, 0).repeat(4, 1)  # alpha 0.2
    Image.fromarray(pixels, mode="RGBA").save(tmp_path / "c.png")
    rgb = _grey(tmp_path / "c.png", channels=3)[:, 0, 0]
    alpha = 51 / 255
    np.testing.assert_allclose(rgb, alpha * np.array([200, 100, 50]) / 255 + (1 - alpha), atol=1e-6)


def test_la_mode(tmp_path):
    pixels = np.zeros((4, 4, 2), np.uint8)
    pixels[..., 0] = 60
    pixels[0, 0, 1] = 255  # one opaque pixel of grey 60, the rest transparent
    Image.fromarray(pixels, mode="LA").save(tmp_path / "la.png")
    assert Image.open(tmp_path / "la.png").mode == "LA"
    grey = _grey(tmp_path / "la.png")[0]
    assert grey[0, 0] == pytest.approx(60 / 255, abs=1e-6)
    assert grey[3, 3] == pytest.approx(1.0, abs=1e-6)


def test_palette_with_and_without_transparency(tmp_path):
    indices = np.zeros((4, 4), np.uint8)
    indices[0] = 1
    image = Image.fromarray(indices, mode="P")
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # 0: black, 1: red
    image.save(tmp_path / "opaque.png")
    image.save(tmp_path / "transparent.png", transparency=0)  # index 0 transparent
    assert Image.open(tmp_path / "transparent.png").mode == "P"
    opaque = _grey(tmp_path / "opaque.png", channels=3)
    np.testing.assert_allclose(opaque[:, 0, 0], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(opaque[:, 3, 3], [0, 0, 0], atol=1e-6)
    transparent = _grey(tmp_path / "transparent.png", channels=3)
    np.testing.assert_allclose(transparent[:, 3, 3], [1, 1, 1], atol=1e-6)  # background, not black
    np.testing.assert_allclose(transparent[:, 0, 0], [1, 0, 0], atol=1e-6)
    # grey of red with the ITU-R 601 weights
    assert _grey(tmp_path / "opaque.png")[0, 0, 0] == pytest.approx(0.299, abs=1e-6)


def test_16_bit_png_scaled_by_65535(tmp_path):
    values = (np.arange(16).reshape(4, 4) * 4369).astype(np.uint16)  # 0 .. 65535
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    np.testing.assert_allclose(_grey(tmp_path / "deep.png")[0], values / 65535, atol=1e-7)


def test_32_bit_integer_image_in_16_bit_range_and_beyond(tmp_path):
    values = (np.arange(16).reshape(4, 4) * 4000).astype(np.int32)
    Image.fromarray(values).save(tmp_path / "int.tif")
    assert Image.open(tmp_path / "int.tif").mode == "I"
    np.testing.assert_allclose(_grey(tmp_path / "int.tif")[0], values / 65535, atol=1e-7)
    Image.fromarray(values * 100).save(tmp_path / "wide.tif")
    with pytest.raises(InputError, match=r"span \[0, 6e\+06\].*\[0, 65535\]"):
        _grey(tmp_path / "wide.tif")


def test_float_tiff_used_as_given_in_unit_range_else_error_with_range(tmp_path):
    values = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    Image.fromarray(values).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    np.testing.assert_allclose(_grey(tmp_path / "f.tif")[0], values, atol=1e-7)
    Image.fromarray(values * 255 - 10).save(tmp_path / "raw.tif")
    with pytest.raises(InputError, match=r"float pixels span \[-10, 245\].*rescale it to \[0, 1\]"):
        _grey(tmp_path / "raw.tif")


def test_one_bit_and_8_bit_grey_and_rgb(tmp_path):
    bits = np.zeros((4, 4), bool)
    bits[:, 0] = True
    Image.fromarray(bits).save(tmp_path / "b.png")
    assert Image.open(tmp_path / "b.png").mode == "1"
    np.testing.assert_array_equal(_grey(tmp_path / "b.png")[0], bits.astype(np.float32))
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 17
    Image.fromarray(grey, mode="L").save(tmp_path / "l.png")
    np.testing.assert_allclose(_grey(tmp_path / "l.png")[0], grey / 255, atol=1e-7)
    np.testing.assert_allclose(_grey(tmp_path / "l.png", channels=3), np.repeat(grey[None] / 255, 3, 0), atol=1e-7)


def test_resize_keeps_16_bit_precision(tmp_path):
    """Resizing happens in float: a 16-bit level between two 8-bit levels survives."""
    level = 1000  # 1000 / 65535 = 0.0153, between 8-bit levels 3/255 and 4/255
    Image.fromarray(np.full((8, 8), level, np.uint16)).save(tmp_path / "flat.png")
    out = load_image(tmp_path / "flat.png", 1, 4, invert="no").numpy()
    np.testing.assert_allclose(out, level / 65535, atol=1e-7)


def test_labelled_folder_and_its_errors(tmp_path):
    for label in ("b", "a"):
        (tmp_path / "s" / label).mkdir(parents=True)
        Image.fromarray(np.full((4, 4), 255 if label == "a" else 0, np.uint8)).save(tmp_path / "s" / label / "0.png")
    folder = read_image_folder(tmp_path / "s", 1, 4, invert="no")
    assert folder.label_names == ["a", "b"] and folder.labels.tolist() == [0, 1]
    assert folder.images.shape == (2, 1, 4, 4) and folder.images.dtype == torch.float32
    assert folder.images[0].min() == 1.0 and folder.images[1].max() == 0.0
    with pytest.raises(InputError, match="is a file, not a folder"):
        read_image_folder(tmp_path / "s" / "a" / "0.png", 1, 4)
    with pytest.raises(InputError, match="does not exist"):
        read_image_folder(tmp_path / "nothing", 1, 4)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "s" / "loose.png")
    with pytest.raises(InputError, match="loose images \\(loose.png\\)"):
        read_image_folder(tmp_path / "s", 1, 4)
