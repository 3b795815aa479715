"""Glyphs: repana's procedural few-shot dataset of stroke-drawn characters (offline, any size, seeded).

A class is a random composition of 2-4 strokes (straight lines, circular arcs, quadratic and
cubic Bezier curves; about half start where an earlier stroke passes, as pen strokes of real
characters do). A sample is the same character redrawn by one "drawer": every control point
jittered, arcs with jittered centre, radius and angles, a random affine distortion (rotation,
anisotropic scale, shear, translation), wobble along the stroke, and per-drawer and per-stroke
width noise. Images are 28x28, one channel, strokes 255 (1.0 after /255) on background 0,
anti-aliased (a pixel's ink is the fraction of its area the strokes cover).

Everything is a pure function of ``(seed, class index, number of drawers)``: class ``c`` looks the
same whatever the number of classes asked for. Classes ``0..n_train-1`` form the train split, the next
``n_val`` the val split and the next ``n_test`` the test split, so splits never share a class.
Strokes are drawn with Pillow at 3x resolution and box-filtered down (256 images per drawing
sheet); the default 1400 classes x 20 drawers take a few seconds and are cached on disk.

Difficulty (measured): nearest neighbour on raw pixels gets 59% on 5-way 1-shot 15-query test
episodes and 37% on 20-way (chance 20% and 5%; on the real Omniglot subset's test split: 40%),
so the set is learnable but far from solved.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from repana.data.cache import cached_arrays
from repana.data.dataset import ImageClassDataset
from repana.errors import InputError

GENERATOR_VERSION = 1          # bump when the drawing changes: it keys the cache
IMAGE_SIZE = 28
POINTS_PER_STROKE = 13         # polyline vertices per stroke (12 segments)
MAX_STROKES = 4

# Drawer variation (coordinates: the canvas spans [-1, 1]; one pixel is 2/28 ~ 0.071).
CONTROL_JITTER = 0.09          # std of each control point's displacement
ARC_ANGLE_JITTER = 0.15        # radians
ARC_RADIUS_JITTER = 0.08       # relative
ROTATION_STD = 0.15            # radians
SCALE_STD = 0.08               # relative, per axis
SHEAR_STD = 0.12
SHIFT_STD = 0.08
WOBBLE_STD = 0.012             # per polyline vertex
HALF_WIDTH_PX = (0.75, 1.25)   # range of a drawer's stroke half-width, in pixels
STROKE_WIDTH_NOISE = 0.15      # relative std of each stroke's width around the drawer's


def _class_rng(seed: int, class_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, class_index, GENERATOR_VERSION])


def _class_strokes(rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """A character: 2-4 strokes, each ``(kind, parameters)``.

    kind "bezier": control points ``(2..4, 2)`` (two points: a straight line); kind "arc":
    ``[cx, cy, radius, start angle, sweep]``.
    """
    strokes: list[tuple[str, np.ndarray]] = []
    anchors: list[np.ndarray] = []
    for _ in range(int(rng.integers(2, MAX_STROKES + 1))):
        start = anchors[rng.integers(len(anchors))] if anchors and rng.random() < 0.5 else None
        draw = rng.random()
        kind = "line" if draw < 0.35 else "arc" if draw < 0.6 else "curve"
        if kind == "arc":
            radius = rng.uniform(0.25, 0.6)
            begin = rng.uniform(0, 2 * math.pi)
            sweep = rng.choice([-1, 1]) * rng.uniform(0.6 * math.pi, 1.7 * math.pi)
            if start is not None:
                centre = start - radius * np.array([math.cos(begin), math.sin(begin)])
            else:
                centre = rng.uniform(-0.35, 0.35, 2)
            params = np.array([centre[0], centre[1], radius, begin, sweep])
            strokes.append(("arc", params))
            points = _arc_points(params[None])[0]
        else:
            n_points = 2 if kind == "line" else int(rng.integers(3, 5))
            while True:
                control = rng.uniform(-0.75, 0.75, (n_points, 2))
                if start is not None:
                    control[0] = start
                if np.linalg.norm(control[-1] - control[0]) > 0.45:
                    break
            strokes.append(("bezier", control))
            points = _bezier_points(control[None])[0]
        anchors.extend(points[[0, POINTS_PER_STROKE // 2, -1]])
    return strokes


def _bernstein(degree: int) -> np.ndarray:
    """``(POINTS_PER_STROKE, degree + 1)`` Bernstein weights at evenly spaced curve parameters."""
    t = np.linspace(0.0, 1.0, POINTS_PER_STROKE)
    return np.stack([math.comb(degree, i) * t ** i * (1 - t) ** (degree - i) for i in range(degree + 1)], 1)


_BERNSTEIN = {degree: _bernstein(degree) for degree in (1, 2, 3)}


def _bezier_points(control: np.ndarray) -> np.ndarray:
    """``control`` (n, k, 2) -> (n, POINTS_PER_STROKE, 2) points of the Bezier curve (k=2: a line)."""
    return _BERNSTEIN[control.shape[1] - 1] @ control


def _arc_points(params: np.ndarray) -> np.ndarray:
    """``params`` (n, 5) [cx, cy, r, start, sweep] -> (n, POINTS_PER_STROKE, 2)."""
    t = np.linspace(0.0, 1.0, POINTS_PER_STROKE)[None, :]
    angle = params[:, 3:4] + t * params[:, 4:5]
    return np.stack([params[:, 0:1] + params[:, 2:3] * np.cos(angle),
                     params[:, 1:2] + params[:, 2:3] * np.sin(angle)], axis=-1)


def _drawings(rng: np.random.Generator, strokes, n_drawers: int) -> tuple[np.ndarray, np.ndarray]:
    """Polylines ``(n_drawers, MAX_STROKES, POINTS_PER_STROKE, 2)`` and half-widths in canvas units
    ``(n_drawers, MAX_STROKES)`` (0 for absent strokes) of one character redrawn by each drawer."""
    polylines = np.zeros((n_drawers, MAX_STROKES, POINTS_PER_STROKE, 2))
    for s, (kind, params) in enumerate(strokes):
        if kind == "arc":
            jitter = np.concatenate([rng.normal(0, CONTROL_JITTER, (n_drawers, 2)),
                                     params[2] * rng.normal(0, ARC_RADIUS_JITTER, (n_drawers, 1)),
                                     rng.normal(0, ARC_ANGLE_JITTER, (n_drawers, 2))], axis=1)
            polylines[:, s] = _arc_points(params[None] + jitter)
        else:
            polylines[:, s] = _bezier_points(params[None] + rng.normal(0, CONTROL_JITTER, (n_drawers,) + params.shape))
    angle = rng.normal(0, ROTATION_STD, n_drawers)
    scale = 1 + rng.normal(0, SCALE_STD, (n_drawers, 2))
    shear = rng.normal(0, SHEAR_STD, n_drawers)
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)       # (d, 2, 2)
    shear_matrix = np.stack([np.stack([np.ones_like(shear), shear], -1),
                             np.stack([np.zeros_like(shear), np.ones_like(shear)], -1)], -2)
    affine = rotation @ shear_matrix * scale[:, None, :]
    polylines = (polylines.reshape(n_drawers, -1, 2) @ affine.transpose(0, 2, 1)).reshape(polylines.shape)
    polylines += rng.normal(0, SHIFT_STD, (n_drawers, 1, 1, 2))
    polylines += rng.normal(0, WOBBLE_STD, polylines.shape)
    pixel = 2.0 / IMAGE_SIZE
    drawer_width = rng.uniform(*HALF_WIDTH_PX, (n_drawers, 1)) * pixel
    widths = drawer_width * np.clip(1 + rng.normal(0, STROKE_WIDTH_NOISE, (n_drawers, MAX_STROKES)), 0.6, 1.5)
    widths[:, len(strokes):] = 0.0
    return polylines, widths


SUPERSAMPLE = 3                # strokes are drawn at 3x resolution, then area-averaged to 28x28
_MARGIN = 6                    # pixels around each image on a drawing sheet (strokes may leave the canvas)
_SHEET = 16                    # images per sheet row and column: one Pillow canvas for 256 images


def render(polylines: np.ndarray, half_widths: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Anti-aliased strokes. ``polylines`` float ``(n, strokes, points, 2)`` in canvas units [-1, 1]
    (x right, y down), ``half_widths`` ``(n, strokes)`` in canvas units (0: stroke absent) -> uint8
    ``(n, size, size)``, ink 255.

    Each stroke is drawn as a polyline of width ``2 * half_width`` on a canvas ``SUPERSAMPLE``
    times larger, which is then box-filtered down: the ink of a pixel is the covered fraction of
    its area (widths resolve to 1/``SUPERSAMPLE`` pixel). Images are drawn 256 at a time on one
    sheet with margins, so ink outside an image's canvas is cut, never spilled onto a neighbour.
    """
    cell = size + 2 * _MARGIN
    big = size * SUPERSAMPLE
    widths = np.rint(half_widths * big).astype(int)              # 2 * half_width * big / 2
    out = np.empty((len(polylines), size, size), dtype=np.uint8)
    for first in range(0, len(polylines), _SHEET * _SHEET):
        count = min(_SHEET * _SHEET, len(polylines) - first)
        sheet = Image.new("L", (_SHEET * cell * SUPERSAMPLE, _SHEET * cell * SUPERSAMPLE), 0)
        draw = ImageDraw.Draw(sheet)
        for k in range(count):
            row, col = divmod(k, _SHEET)
            offset = np.array([col * cell + _MARGIN, row * cell + _MARGIN]) * SUPERSAMPLE
            points = (polylines[first + k] + 1.0) * (big / 2.0) + offset
            for stroke, width in zip(points, widths[first + k]):
                if width > 0:
                    draw.line(stroke.ravel().tolist(), fill=255, width=int(width))
        small = np.asarray(sheet.resize((_SHEET * cell, _SHEET * cell), resample=Image.Resampling.BOX))
        cells = small.reshape(_SHEET, cell, _SHEET, cell).transpose(0, 2, 1, 3).reshape(-1, cell, cell)
        out[first:first + count] = cells[:count, _MARGIN:_MARGIN + size, _MARGIN:_MARGIN + size]
    return out


def generate_glyphs(class_indices, n_drawers: int = 20, seed: int = 0) -> np.ndarray:
    """uint8 ``(len(class_indices), n_drawers, 28, 28)``: drawer ``d`` of class ``c`` for each ``c``."""
    class_indices = list(class_indices)
    polylines = np.zeros((len(class_indices), n_drawers, MAX_STROKES, POINTS_PER_STROKE, 2), dtype=np.float32)
    widths = np.zeros((len(class_indices), n_drawers, MAX_STROKES), dtype=np.float32)
    for row, c in enumerate(class_indices):
        rng = _class_rng(seed, int(c))
        polylines[row], widths[row] = _drawings(rng, _class_strokes(rng), n_drawers)
    images = render(polylines.reshape(-1, MAX_STROKES, POINTS_PER_STROKE, 2), widths.reshape(-1, MAX_STROKES))
    return images.reshape(len(class_indices), n_drawers, IMAGE_SIZE, IMAGE_SIZE)


def drawing_parameters() -> dict:
    """Every constant that shapes the images (part of the cache key: changing one regenerates)."""
    return {"version": GENERATOR_VERSION, "size": IMAGE_SIZE, "points": POINTS_PER_STROKE, "strokes": MAX_STROKES,
            "control": CONTROL_JITTER, "arc_angle": ARC_ANGLE_JITTER, "arc_radius": ARC_RADIUS_JITTER,
            "rotation": ROTATION_STD, "scale": SCALE_STD, "shear": SHEAR_STD, "shift": SHIFT_STD,
            "wobble": WOBBLE_STD, "width": HALF_WIDTH_PX, "width_noise": STROKE_WIDTH_NOISE,
            "supersample": SUPERSAMPLE, "margin": _MARGIN}


def _dataset(images: np.ndarray, first_class: int, name: str) -> ImageClassDataset:
    n_classes, n_drawers = images.shape[:2]
    labels = np.repeat(np.arange(n_classes, dtype=np.int64), n_drawers)
    return ImageClassDataset(torch.from_numpy(np.ascontiguousarray(images.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE))),
                             torch.from_numpy(labels), [f"glyph{first_class + i:05d}" for i in range(n_classes)], name)


def load_glyph_splits(root=None, split: str = "default", n_train: int = 1000, n_val: int = 100, n_test: int = 300,
                      n_drawers: int = 20, seed: int = 0, cache_dir=None, use_cache: bool = True
                      ) -> dict[str, ImageClassDataset]:
    """``{"train", "val", "test"}`` glyph datasets with disjoint classes (``root`` is unused: glyphs
    are generated; the arrays are cached under ``cache_dir``)."""
    if split != "default":
        raise InputError(f"glyphs have one split, 'default' (sizes via n_train/n_val/n_test), got {split!r}")
    for what, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test), ("n_drawers", n_drawers)):
        if not isinstance(value, (int, np.integer)) or value < (1 if what == "n_drawers" else 0):
            raise InputError(f"{what} must be a {'positive' if what == 'n_drawers' else 'non-negative'} integer, "
                             f"got {value!r}")
    total = n_train + n_val + n_test
    key = {"dataset": "glyphs", "drawing": drawing_parameters(), "classes": total, "drawers": n_drawers, "seed": seed}
    arrays = cached_arrays("glyphs", key, lambda: {"images": generate_glyphs(range(total), n_drawers, seed)},
                           cache_dir=cache_dir, use_cache=use_cache)
    images = arrays["images"]
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, total)}
    return {part: _dataset(images[a:b], a, f"glyphs/{part}") for part, (a, b) in bounds.items()}
