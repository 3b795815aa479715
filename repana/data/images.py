"""Your own images as model inputs: image files and folders of them (one subfolder per label).

```python
from repana.data.images import load_image, read_image_folder
x = load_image("a.png", channels=1, size=28)                 # float32 (1, 28, 28) in [0, 1]
support = read_image_folder("support", channels=1, size=28, labelled=True)
support.images  # float32 (n, C, H, W); support.labels int64 (n,); support.label_names; support.files
```

Every image is read by its real mode, so no pixel is silently misread:

* 8-bit grey / colour / palette / CMYK / YCbCr: value / 255;
* 1-bit: 0 or 1;
* 16-bit grey (``I;16*``, or ``I`` holding values in [0, 65535]): value / 65535;
* 32-bit float (``F``): used as given when it lies in [0, 1], else an :class:`InputError` naming its range;
* alpha (``RGBA``, ``LA``, ``PA``, palettes with a transparent colour): composited on ``background``
  (white by default: a transparent background reads as paper, not as black ink).

Colour becomes grey with the ITU-R 601 luma weights (those of Pillow's ``"L"``); grey becomes colour by
repeating it. Images are resized to ``size x size`` (bilinear, in float: no 8-bit rounding) when their
size differs. For 1-channel models, ``invert="auto"`` turns dark strokes on a light background into
the Omniglot convention (strokes 1, background 0) when the mean is above 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from repana.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "ImageFolder", "image_files", "image_to_array", "load_image", "read_image_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R 601-2, as Pillow's convert("L")
INVERT_CHOICES = ("auto", "yes", "no")
_BACKGROUNDS = {"white": 1.0, "black": 0.0}


@dataclass
class ImageFolder:
    """Images read from a folder. ``images``: float32 ``(n, C, H, W)`` in [0, 1]; ``files``: their
    paths, in the order of ``images``; ``labels``: int64 ``(n,)`` indices into ``label_names`` (the
    subfolder names, sorted), or None for a flat folder."""

    images: torch.Tensor
    files: list[Path]
    labels: torch.Tensor | None = None
    label_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.files)


def _background_value(background: float | str) -> float:
    if isinstance(background, str):
        if background not in _BACKGROUNDS:
            raise InputError(f"background {background!r} must be 'white', 'black' or a number in [0, 1]")
        return _BACKGROUNDS[background]
    value = float(background)
    if not 0.0 <= value <= 1.0:
        raise InputError(f"background {background} must be in [0, 1] (0 black, 1 white)")
    return value


def image_to_array(image, background: float | str = "white", name: str = "image") -> np.ndarray:
    """A Pillow image as float64 ``(H, W, 1)`` (grey) or ``(H, W, 3)`` (colour) in [0, 1], read by
    its mode (module doc), alpha composited on ``background``."""
    mode = image.mode
    if mode in ("P", "PA"):  # a palette may carry transparency: expand it to colour + alpha
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
    if mode == "La":  # premultiplied alpha
        image, mode = image.convert("LA"), "LA"
    elif mode == "RGBa":
        image, mode = image.convert("RGBA"), "RGBA"
    alpha = None
    if mode in ("LA", "RGBA"):
        array = np.asarray(image, dtype=np.float64) / 255.0
        array, alpha = array[..., :-1], array[..., -1:]
    elif mode == "1":
        array = np.asarray(image, dtype=np.float64)[..., None]
    elif mode == "L":
        array = np.asarray(image, dtype=np.float64)[..., None] / 255.0
    elif mode.startswith("I;16"):
        array = np.asarray(image).astype(np.float64)[..., None] / 65535.0
    elif mode == "I":
        array = np.asarray(image).astype(np.float64)
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 65535:
            raise InputError(f"{name}: 32-bit integer pixels span [{low:g}, {high:g}]; repana reads integer "
                             "images as 8- or 16-bit (values in [0, 65535]): save it as a 16-bit PNG or a "
                             "float TIFF scaled to [0, 1]")
        array = array[..., None] / 65535.0
    elif mode == "F":
        array = np.asarray(image).astype(np.float64)
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        if not np.isfinite(array).all() or low < 0 or high > 1:
            raise InputError(f"{name}: float pixels span [{low:g}, {high:g}]"
                             f"{' with NaN or inf' if not np.isfinite(array).all() else ''}; repana reads float "
                             "images as intensities in [0, 1]: rescale it to [0, 1]")
        array = array[..., None]
    else:  # RGB, RGBX, CMYK, YCbCr, LAB, HSV, ...: Pillow knows how to make 8-bit RGB of it
        array = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    if alpha is not None:
        array = alpha * array + (1.0 - alpha) * _background_value(background)
    return array


def _to_channels(array: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1:
        return array if array.shape[2] == 1 else (array @ LUMA_WEIGHTS)[..., None]
    if channels == 3:
        return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array
    raise InputError(f"channels = {channels}: images can be read as 1 (grey) or 3 (RGB) channels")


def _resize(array: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if array.shape[:2] == (size, size):
        return array
    planes = [np.asarray(Image.fromarray(array[..., c].astype(np.float32), mode="F").resize(
        (size, size), Image.BILINEAR), dtype=np.float64) for c in range(array.shape[2])]
    return np.clip(np.stack(planes, axis=2), 0.0, 1.0)


def load_image(path: str | Path, channels: int, size: int, invert: str = "auto",
               background: float | str = "white") -> torch.Tensor:
    """One image file as float32 ``(channels, size, size)`` in [0, 1] (module doc: how modes are read).

    ``invert`` ("auto" | "yes" | "no") applies to 1-channel images: "auto" inverts when the mean is
    above 0.5. ``background``: what transparent pixels show, "white", "black" or a grey level in [0, 1].
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if invert not in INVERT_CHOICES:
        raise InputError(f"invert {invert!r} must be one of {', '.join(INVERT_CHOICES)}")
    path = Path(path)
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)  # photos taken sideways stand up
            array = image_to_array(image, background, name=f"image {path}")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"cannot read image {path}: {error}") from None
    array = _resize(_to_channels(array, channels), size)
    if channels == 1 and (invert == "yes" or (invert == "auto" and array.mean() > 0.5)):
        array = 1.0 - array
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32))


def image_files(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder`` (by suffix: :data:`IMAGE_SUFFIXES`), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _check_folder(folder: Path, what: str) -> None:
    if not folder.exists():
        raise InputError(f"{what} folder {folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"{what} folder {folder} is a file, not a folder: pass the folder that holds the images")


def read_image_folder(folder: str | Path, channels: int, size: int, *, labelled: bool | None = None,
                      invert: str = "auto", background: float | str = "white", what: str = "image") -> ImageFolder:
    """The images of ``folder`` as an :class:`ImageFolder`.

    ``labelled=True``: one subfolder per label holding that label's images (labels sorted by name);
    ``False``: image files directly in ``folder``; ``None``: labelled when ``folder`` has subfolders.
    ``what`` names the folder in error messages ("support", "query"). Other arguments: :func:`load_image`.
    """
    folder = Path(folder)
    _check_folder(folder, what)
    subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir())
    loose = image_files(folder)
    if labelled is None:
        labelled = bool(subfolders)
    if not labelled:
        if not loose:
            raise InputError(f"{what} folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        images = torch.stack([load_image(p, channels, size, invert, background) for p in loose])
        return ImageFolder(images=images, files=loose)
    if not subfolders:
        raise InputError(f"{what} folder {folder} has no label subfolders; put each label's images in "
                         f"{folder}/<label>/")
    if loose:
        raise InputError(f"{what} folder {folder} holds label subfolders and also loose images "
                         f"({', '.join(p.name for p in loose[:3])}{', ...' if len(loose) > 3 else ''}): "
                         "move each image into its label's subfolder")
    files, labels, empty = [], [], []
    for index, label in enumerate(subfolders):
        found = image_files(folder / label)
        if not found:
            empty.append(label)
        files += found
        labels += [index] * len(found)
    if empty:
        raise InputError(f"{what} label folders without images: {empty}")
    images = torch.stack([load_image(p, channels, size, invert, background) for p in files])
    return ImageFolder(images=images, files=files, labels=torch.tensor(labels, dtype=torch.int64),
                       label_names=subfolders)
