"""A labelled image set held as decoded uint8 tensors in memory: the one input of episode sampling."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from repana.errors import InputError


@dataclass(eq=False)  # identity equality: comparing image tensors elementwise is never what is meant
class ImageClassDataset:
    """Decoded images of ``n_classes`` classes.

    Attributes:
        images: uint8 ``(n_images, C, H, W)``; pixel values 0..255 (for glyphs and Omniglot,
            strokes are 255 and background 0).
        labels: int64 ``(n_images,)`` in ``[0, n_classes)``.
        class_names: ``n_classes`` names, e.g. ``"Greek/character03/rot090"``.
        name: short description used in messages and by ``repana data info``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    name: str = ""
    _class_table: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.images, np.ndarray):
            self.images = torch.from_numpy(np.ascontiguousarray(self.images))
        if isinstance(self.labels, np.ndarray):
            self.labels = torch.from_numpy(np.ascontiguousarray(self.labels))
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise InputError(f"images must be uint8 (n_images, C, H, W); got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        self.labels = self.labels.to(torch.int64)
        if self.labels.shape != (self.images.shape[0],):
            raise InputError(f"labels must be (n_images,) = ({self.images.shape[0]},); got {tuple(self.labels.shape)}")
        self.class_names = list(self.class_names)
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise InputError(f"labels must lie in [0, {len(self.class_names)}) (one per class name); got "
                             f"[{int(self.labels.min())}, {int(self.labels.max())}]")

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return self.images.shape[0]

    def images_per_class(self) -> np.ndarray:
        """int64 ``(n_classes,)``: how many images each class has."""
        return np.bincount(self.labels.numpy(), minlength=self.n_classes).astype(np.int64)

    def class_table(self) -> torch.Tensor:
        """int64 ``(n_classes, max_images_per_class)``: image indices of each class, padded with -1.

        Built once and kept: episode samplers index through it, so creating a sampler is free.
        """
        if self._class_table is None:
            labels = self.labels.numpy()
            order = np.argsort(labels, kind="stable")
            counts = np.bincount(labels, minlength=self.n_classes)
            width = int(counts.max()) if len(counts) and len(labels) else 0
            table = np.full((self.n_classes, width), -1, dtype=np.int64)
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
            position = np.arange(len(labels)) - np.repeat(starts, counts)
            table[labels[order], position] = order
            self._class_table = torch.from_numpy(table)
        return self._class_table

    def subset(self, class_ids, name: str | None = None) -> "ImageClassDataset":
        """The images of ``class_ids`` (in that order), relabelled ``0..len(class_ids)-1``."""
        class_ids = np.asarray(class_ids, dtype=np.int64)
        mapping = np.full(self.n_classes, -1, dtype=np.int64)
        mapping[class_ids] = np.arange(len(class_ids))
        new_labels = mapping[self.labels.numpy()]
        keep = np.flatnonzero(new_labels >= 0)
        return ImageClassDataset(self.images[torch.from_numpy(keep)], torch.from_numpy(new_labels[keep]),
                                 [self.class_names[i] for i in class_ids], name if name is not None else self.name)

    def fingerprint(self) -> str:
        """sha256 (hex, 16 characters) of images, labels and class names: identifies the exact data."""
        digest = hashlib.sha256()
        digest.update(self.images.contiguous().numpy().tobytes())
        digest.update(self.labels.numpy().tobytes())
        digest.update("\n".join(self.class_names).encode())
        return digest.hexdigest()[:16]

    def summary(self) -> dict:
        """Counts for ``repana data info``: classes, images, image shape, images per class (min/max)."""
        per_class = self.images_per_class()
        return {"name": self.name, "classes": self.n_classes, "images": len(self),
                "image_shape": list(self.image_shape),
                "images_per_class_min": int(per_class.min()) if len(per_class) else 0,
                "images_per_class_max": int(per_class.max()) if len(per_class) else 0}

    def __repr__(self) -> str:
        return (f"ImageClassDataset({self.name!r}: {self.n_classes} classes, {len(self)} images "
                f"of shape {self.image_shape})")
