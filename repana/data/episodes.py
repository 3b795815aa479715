"""Seeded N-way K-shot episodes, batched as tensors, gathered from uint8 images held in memory.

Sampling is pure indexing: a numpy Generator picks classes and images, one gather from the uint8
image tensor builds the whole meta-batch, one conversion gives float32 in [0, 1]. No image is
decoded per episode.

Episode layout: within each task the support set is class-major (``ways`` blocks of ``shots``
images, labels ``0,..,0,1,..,1,...``), likewise the query set; which dataset class gets label ``j``
is random per task (the classes are drawn in random order), so labels are permuted per episode.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from repana.data.dataset import ImageClassDataset
from repana.errors import InputError
from repana.limits import MAX_EPISODES, check_count


@dataclass
class Episode:
    """One task. support_x float32 ``(ways*shots, C, H, W)`` in [0, 1]; support_y int64
    ``(ways*shots,)`` in ``[0, ways)``; query_x ``(ways*queries, C, H, W)``; query_y ``(ways*queries,)``;
    class_ids int64 ``(ways,)``: the dataset class behind label ``j``."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    class_ids: torch.Tensor

    def to(self, device) -> "Episode":
        return Episode(*(t.to(device) for t in (self.support_x, self.support_y, self.query_x,
                                                self.query_y, self.class_ids)))


@dataclass
class Episodes:
    """A batch of ``tasks`` episodes of the same shape.

    support_x float32 ``(tasks, ways*shots, C, H, W)`` in [0, 1]; support_y int64 ``(tasks, ways*shots)``
    in ``[0, ways)``; query_x float32 ``(tasks, ways*queries, C, H, W)``; query_y int64
    ``(tasks, ways*queries)``; class_ids int64 ``(tasks, ways)``: dataset class of each label.

    ``len(batch)`` is the number of tasks, ``batch[i]`` one :class:`Episode`, ``batch[a:b]`` or
    ``batch.index(slice)`` a sub-batch, ``batch.chunks(n)`` sub-batches of at most ``n`` tasks.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    class_ids: torch.Tensor

    @property
    def ways(self) -> int:
        return self.class_ids.shape[1]

    @property
    def shots(self) -> int:
        return self.support_y.shape[1] // self.ways

    @property
    def queries(self) -> int:
        return self.query_y.shape[1] // self.ways

    def __len__(self) -> int:
        return self.support_x.shape[0]

    def __getitem__(self, item):
        if isinstance(item, slice):
            return self.index(item)
        return Episode(self.support_x[item], self.support_y[item], self.query_x[item], self.query_y[item],
                       self.class_ids[item])

    def __iter__(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self[i]

    def index(self, selection) -> "Episodes":
        """Sub-batch: ``selection`` is a slice, or an int64 tensor / list of task indices."""
        if isinstance(selection, int):
            selection = slice(selection, selection + 1)
        return Episodes(self.support_x[selection], self.support_y[selection], self.query_x[selection],
                        self.query_y[selection], self.class_ids[selection])

    def chunks(self, size: int) -> Iterator["Episodes"]:
        """Consecutive sub-batches of at most ``size`` tasks."""
        _check_positive("chunk size", size)
        for start in range(0, len(self), size):
            yield self.index(slice(start, start + size))

    def to(self, device) -> "Episodes":
        return Episodes(*(t.to(device) for t in (self.support_x, self.support_y, self.query_x,
                                                 self.query_y, self.class_ids)))


def _check_positive(what: str, value: int) -> None:
    if not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{what} must be a positive integer, got {value!r}")


def check_episode_shape(ds: ImageClassDataset, ways: int, shots: int, queries: int) -> None:
    """Raise InputError when ``ds`` cannot provide ``ways``-way episodes of ``shots + queries`` images per class."""
    _check_positive("ways", ways)
    _check_positive("shots", shots)
    if not isinstance(queries, (int, np.integer)) or queries < 0:
        raise InputError(f"queries must be a non-negative integer, got {queries!r}")
    if ways > ds.n_classes:
        raise InputError(f"{ways}-way episodes need {ways} classes but {ds.name or 'the dataset'} has only "
                         f"{ds.n_classes}; use fewer ways or a split with more classes")
    per_class = ds.images_per_class()
    needed = shots + queries
    eligible = int((per_class >= needed).sum())
    if eligible < ways:
        raise InputError(f"{shots} shots + {queries} queries = {needed} images per class, but only {eligible} "
                         f"classes of {ds.name or 'the dataset'} have that many (images per class: "
                         f"{int(per_class.min())}..{int(per_class.max())}); use fewer shots or queries")


def gather_episodes(ds: ImageClassDataset, indices: torch.Tensor, class_ids: torch.Tensor, shots: int,
                    device=None) -> Episodes:
    """Materialise episodes from image indices.

    ``indices``: int64 ``(tasks, ways, shots + queries)`` into ``ds.images``; ``class_ids`` int64
    ``(tasks, ways)``. Images are gathered as uint8 (on ``device`` when given, else where
    ``ds.images`` lives) and converted once to float32 / 255.
    """
    tasks, ways, per_class = indices.shape
    queries = per_class - shots
    images = ds.images if device is None else ds.images.to(device)
    indices = indices.to(images.device)

    def take(part: torch.Tensor, n: int) -> torch.Tensor:
        # Support and query are gathered separately so each comes out contiguous in its final order.
        # On CPU numpy's take + divide (single-threaded) is ~10x faster than torch's indexing on a
        # busy machine, where torch's intra-op threads for these small tensors contend for cores.
        if images.device.type == "cpu":
            flat = np.take(images.numpy(), part.reshape(-1).numpy(), axis=0)
            out = np.empty(flat.shape, dtype=np.float32)
            np.divide(flat, np.float32(255.0), out=out, dtype=np.float32)
            return torch.from_numpy(out).reshape(tasks, n, *ds.image_shape)
        flat = images.index_select(0, part.reshape(-1))
        return flat.reshape(tasks, n, *ds.image_shape).to(torch.float32).div_(255.0)

    support_x = take(indices[:, :, :shots], ways * shots)
    query_x = take(indices[:, :, shots:], ways * queries)
    labels = torch.arange(ways, device=images.device, dtype=torch.int64)
    support_y = labels.repeat_interleave(shots).expand(tasks, -1).contiguous()
    query_y = labels.repeat_interleave(queries).expand(tasks, -1).contiguous()
    return Episodes(support_x, support_y, query_x, query_y, class_ids.to(images.device))


class EpisodeSampler:
    """Draws seeded ``ways``-way ``shots``-shot episodes with ``queries`` queries per class from ``ds``.

    Classes of a task are distinct (drawn without replacement among the classes that have at least
    ``shots + queries`` images), images within a class are distinct, and the support and query sets
    are disjoint. The same seed gives the same sequence of batches; ``state_dict`` /
    ``load_state_dict`` save and restore the generator for resumable training. Creating a sampler
    is cheap (the class table is cached on the dataset).
    """

    def __init__(self, ds: ImageClassDataset, ways: int = 5, shots: int = 1, queries: int = 15, seed: int = 0):
        check_episode_shape(ds, ways, shots, queries)
        self.ds, self.ways, self.shots, self.queries = ds, int(ways), int(shots), int(queries)
        self.rng = np.random.default_rng(seed)
        table = ds.class_table()
        counts = ds.images_per_class()
        self._eligible = np.flatnonzero(counts >= shots + queries)
        self._table = table.numpy()
        self._counts = counts
        self._uniform = bool((counts[self._eligible] == self._table.shape[1]).all())

    def sample_indices(self, tasks: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices int64 (tasks, ways, shots+queries), class_ids int64 (tasks, ways))``."""
        _check_positive("tasks", tasks)
        per_class = self.shots + self.queries
        n_eligible = len(self._eligible)
        # Classes without replacement per task: the first `ways` of a random permutation. argsort of
        # uniform keys is a vectorised permutation; for many classes partial selection is cheaper.
        if n_eligible <= 4 * self.ways:
            chosen = np.argsort(self.rng.random((tasks, n_eligible)), axis=1)[:, :self.ways]
        else:
            chosen = np.stack([self.rng.choice(n_eligible, self.ways, replace=False) for _ in range(tasks)])
        class_ids = self._eligible[chosen]                               # (tasks, ways)
        width = self._table.shape[1]
        keys = self.rng.random((tasks, self.ways, width))
        if not self._uniform:  # classes with fewer images: their padding slots never come first
            keys[np.arange(width)[None, None, :] >= self._counts[class_ids][:, :, None]] = np.inf
        if per_class < width // 4:  # partial selection, then order the chosen few by their keys so
            # that which image is support and which is query stays uniformly random
            slots = np.argpartition(keys, per_class, axis=2)[:, :, :per_class]
            slots = np.take_along_axis(slots, np.argsort(np.take_along_axis(keys, slots, 2), axis=2), 2)
        else:
            slots = np.argsort(keys, axis=2)[:, :, :per_class]
        indices = self._table[class_ids[:, :, None], slots]
        return torch.from_numpy(indices), torch.from_numpy(class_ids)

    def sample(self, tasks: int = 1, device=None) -> Episodes:
        """A batch of ``tasks`` episodes (float32 images in [0, 1]); see :class:`Episodes`."""
        indices, class_ids = self.sample_indices(tasks)
        return gather_episodes(self.ds, indices, class_ids, self.shots, device=device)

    def __iter__(self) -> Iterator[Episode]:
        while True:
            yield self.sample(1)[0]

    def state_dict(self) -> dict:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["bit_generator"]


class FixedEpisodes:
    """A reproducible evaluation set: ``n_episodes`` tasks stored as image indices, materialised on demand.

    Holding indices (``(n_episodes, ways, shots+queries)`` int64, ~150 kB for 600 5-way 1-shot
    15-query tasks) instead of float32 images (~150 MB) keeps it cheap; ``chunks(n)`` yields
    :class:`Episodes` of at most ``n`` tasks, ``all()`` the whole set at once. It behaves like
    :class:`Episodes` for reading: ``len``, ``[i]`` (one :class:`Episode`), ``[a:b]`` / ``index`` (a
    sub-batch), ``to(device)`` (moves the uint8 images once, later batches are built there).
    The tasks equal those of ``EpisodeSampler(ds, ways, shots, queries, seed).sample(n_episodes)``.
    """

    def __init__(self, ds: ImageClassDataset, indices: torch.Tensor, class_ids: torch.Tensor, shots: int,
                 device=None):
        self.ds, self.indices, self.class_ids, self.shots = ds, indices, class_ids, shots
        self.device = device

    @property
    def ways(self) -> int:
        return self.indices.shape[1]

    @property
    def queries(self) -> int:
        return self.indices.shape[2] - self.shots

    def __len__(self) -> int:
        return self.indices.shape[0]

    def index(self, selection) -> Episodes:
        if isinstance(selection, int):
            selection = slice(selection, selection + 1)
        return gather_episodes(self.ds, self.indices[selection], self.class_ids[selection], self.shots,
                               device=self.device)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return self.index(item)
        if not -len(self) <= item < len(self):
            raise IndexError(f"episode {item} out of range for {len(self)} episodes")
        item = item % len(self)
        return self.index(slice(item, item + 1))[0]

    def __iter__(self) -> Iterator[Episode]:
        for batch in self.chunks(64):
            yield from batch

    def chunks(self, size: int) -> Iterator[Episodes]:
        _check_positive("chunk size", size)
        for start in range(0, len(self), size):
            yield self.index(slice(start, start + size))

    def all(self) -> Episodes:
        """Every episode in one :class:`Episodes` (memory: n_episodes x task size in float32)."""
        return self.index(slice(None))

    def to(self, device) -> "FixedEpisodes":
        moved = replace_dataset_images(self.ds, self.ds.images.to(device))
        return FixedEpisodes(moved, self.indices, self.class_ids, self.shots, device=device)

    def fingerprint(self) -> str:
        """sha256 (16 hex) of the dataset and the task indices: equal fingerprints mean the same tasks."""
        digest = hashlib.sha256(self.ds.fingerprint().encode())
        digest.update(self.indices.numpy().tobytes())
        digest.update(str(self.shots).encode())
        return digest.hexdigest()[:16]


def replace_dataset_images(ds: ImageClassDataset, images: torch.Tensor) -> ImageClassDataset:
    """A shallow copy of ``ds`` whose images are ``images`` (e.g. on another device), class table kept."""
    copy = object.__new__(ImageClassDataset)
    copy.images, copy.labels, copy.class_names, copy.name = images, ds.labels, ds.class_names, ds.name
    copy._class_table = ds._class_table
    return copy


def fixed_episodes(ds: ImageClassDataset, n_episodes: int = 600, ways: int = 5, shots: int = 1,
                   queries: int = 15, seed: int = 0) -> FixedEpisodes:
    """The same ``n_episodes`` tasks for every algorithm and ablation evaluated with this seed.

    Returns a :class:`FixedEpisodes` (indices; images are materialised per chunk). At most
    :data:`repana.limits.MAX_EPISODES` episodes (their indices are held in memory).
    """
    _check_positive("n_episodes", n_episodes)
    check_count(n_episodes, "n_episodes =", MAX_EPISODES, what="166x the paper's 600 test episodes")
    sampler = EpisodeSampler(ds, ways=ways, shots=shots, queries=queries, seed=seed)
    indices, class_ids = sampler.sample_indices(n_episodes)
    return FixedEpisodes(ds, indices, class_ids, shots)
