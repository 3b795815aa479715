"""ImageClassDataset and episode sampling: shapes, label sets, distinct classes, determinism, uniformity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repana.data import EpisodeSampler, Episodes, ImageClassDataset, fixed_episodes
from repana.errors import InputError


def make_dataset(counts, size=4, channels=1, seed=0) -> ImageClassDataset:
    """Class c has counts[c] images; image i is filled with a unique id so it can be traced back."""
    labels = np.repeat(np.arange(len(counts)), counts)
    ids = np.random.default_rng(seed).permutation(len(labels))  # shuffled: images not grouped by class
    labels = labels[ids]
    images = np.zeros((len(labels), channels, size, size), dtype=np.uint8)
    images[:, :, 0, 0] = (np.arange(len(labels)) % 256)[:, None]
    images[:, :, 0, 1] = (np.arange(len(labels)) // 256)[:, None]
    images[:, :, 1, 0] = labels[:, None]  # the class, readable from the image itself
    return ImageClassDataset(torch.from_numpy(images), torch.from_numpy(labels), [f"c{i}" for i in range(len(counts))],
                             "toy")


def image_ids(x: torch.Tensor) -> np.ndarray:
    pixels = (x * 255).round().to(torch.int64)
    return (pixels[..., 0, 0, 0] + 256 * pixels[..., 0, 0, 1]).numpy()


def image_classes(x: torch.Tensor) -> np.ndarray:
    return (x[..., 0, 1, 0] * 255).round().to(torch.int64).numpy()


def test_dataset_validates_and_reports_counts():
    ds = make_dataset([3, 5, 2])
    assert ds.n_classes == 3 and len(ds) == 10 and ds.image_shape == (1, 4, 4)
    assert ds.images_per_class().tolist() == [3, 5, 2]
    table = ds.class_table()
    assert table.shape == (3, 5)
    for c, count in enumerate([3, 5, 2]):
        row = table[c].numpy()
        assert (row[count:] == -1).all()
        assert sorted(ds.labels[row[:count]].tolist()) == [c] * count
    with pytest.raises(InputError, match="uint8"):
        ImageClassDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64), ["a"])
    with pytest.raises(InputError, match=r"labels must lie in \[0, 1\)"):
        ImageClassDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]), ["a"])
    sub = ds.subset([2, 0])
    assert sub.class_names == ["c2", "c0"] and sub.images_per_class().tolist() == [2, 3]


def test_episode_shapes_labels_and_content():
    ds = make_dataset([20] * 12)
    batch = EpisodeSampler(ds, ways=5, shots=2, queries=3, seed=1).sample(tasks=7)
    assert isinstance(batch, Episodes) and len(batch) == 7
    assert batch.support_x.shape == (7, 10, 1, 4, 4) and batch.query_x.shape == (7, 15, 1, 4, 4)
    assert batch.support_x.dtype == torch.float32 and batch.support_y.dtype == torch.int64
    assert batch.support_y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert batch.query_y[0].tolist() == sum([[j] * 3 for j in range(5)], [])
    for t in range(7):
        classes = batch.class_ids[t].numpy()
        assert len(set(classes.tolist())) == 5  # no repeated class in a task
        # every image belongs to the dataset class behind its label
        assert (image_classes(batch.support_x[t]) == classes[batch.support_y[t].numpy()]).all()
        assert (image_classes(batch.query_x[t]) == classes[batch.query_y[t].numpy()]).all()
        support, query = image_ids(batch.support_x[t]), image_ids(batch.query_x[t])
        assert len(set(support) | set(query)) == 25  # distinct images, support and query disjoint
        # pixel values are exactly the uint8 images / 255
        assert torch.equal(batch.support_x[t], ds.images[torch.from_numpy(support)].float() / 255)


def test_same_seed_same_episodes_different_seed_different():
    ds = make_dataset([20] * 30)
    a = EpisodeSampler(ds, 5, 1, 15, seed=3).sample(4)
    b = EpisodeSampler(ds, 5, 1, 15, seed=3).sample(4)
    c = EpisodeSampler(ds, 5, 1, 15, seed=4).sample(4)
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert torch.equal(a.class_ids, b.class_ids)
    assert not torch.equal(a.class_ids, c.class_ids)


def test_labels_are_permuted_per_episode_and_classes_uniform():
    ds = make_dataset([20] * 6)
    batch = EpisodeSampler(ds, ways=3, shots=1, queries=1, seed=0).sample(3000)
    # class 0 gets each of the 3 labels about equally often (label permutation per episode)
    label_of_class0 = [int(np.flatnonzero(ids == 0)[0]) for ids in batch.class_ids.numpy() if 0 in ids]
    counts = np.bincount(label_of_class0, minlength=3)
    assert counts.min() > 0.28 * counts.sum()
    # each class appears in about ways / n_classes = 1/2 of the tasks
    appear = np.bincount(batch.class_ids.numpy().ravel(), minlength=6) / 3000
    assert np.allclose(appear, 0.5, atol=0.04)


@pytest.mark.parametrize("queries", [1, 15])  # 1+1 of 20: partial-selection path; 1+15: full sort path
def test_support_image_is_uniform_within_class(queries):
    ds = make_dataset([20] * 5)
    batch = EpisodeSampler(ds, ways=5, shots=1, queries=queries, seed=0).sample(2000)
    table = ds.class_table().numpy()
    support = image_ids(batch.support_x)                       # (tasks, 5)
    slot = np.array([[np.flatnonzero(table[c] == i)[0] for c, i in zip(cs, ids)]
                     for cs, ids in zip(batch.class_ids.numpy(), support)])
    frequency = np.bincount(slot.ravel(), minlength=20) / slot.size
    assert np.abs(frequency - 1 / 20).max() < 0.015  # 10000 draws: std of each frequency ~0.002


def test_uneven_classes_only_eligible_ones_are_used():
    ds = make_dataset([3, 10, 4, 10, 10, 2])
    batch = EpisodeSampler(ds, ways=3, shots=2, queries=2, seed=0).sample(200)
    used = set(batch.class_ids.numpy().ravel().tolist())
    assert used == {1, 2, 3, 4}  # classes 0 and 5 have fewer than 4 images
    for t in range(200):
        ids = np.concatenate([image_ids(batch.support_x[t]), image_ids(batch.query_x[t])])
        assert len(set(ids.tolist())) == 12


def test_bad_episode_requests_are_clear():
    ds = make_dataset([5] * 4)
    with pytest.raises(InputError, match="5-way episodes need 5 classes but toy has only 4"):
        EpisodeSampler(ds, ways=5, shots=1, queries=1)
    with pytest.raises(InputError, match=r"1 shots \+ 5 queries = 6 images per class"):
        EpisodeSampler(ds, ways=2, shots=1, queries=5)
    with pytest.raises(InputError, match="shots must be a positive integer"):
        EpisodeSampler(ds, ways=2, shots=0, queries=1)
    with pytest.raises(InputError, match="tasks must be a positive integer"):
        EpisodeSampler(ds, ways=2, shots=1, queries=1).sample(0)


def test_fixed_episodes_match_sampler_and_chunks():
    ds = make_dataset([20] * 10)
    fixed = fixed_episodes(ds, n_episodes=23, ways=4, shots=1, queries=5, seed=9)
    reference = EpisodeSampler(ds, 4, 1, 5, seed=9).sample(23)
    everything = fixed.all()
    assert len(fixed) == 23 and torch.equal(everything.query_x, reference.query_x)
    chunks = list(fixed.chunks(10))
    assert [len(c) for c in chunks] == [10, 10, 3]
    assert torch.equal(torch.cat([c.support_x for c in chunks]), reference.support_x)
    assert torch.equal(fixed[22].query_y, reference.query_y[22])
    assert torch.equal(fixed[-1].support_x, reference.support_x[22])
    assert torch.equal(fixed[5:8].class_ids, reference.class_ids[5:8])
    assert fixed.fingerprint() == fixed_episodes(ds, 23, 4, 1, 5, seed=9).fingerprint()
    assert fixed.fingerprint() != fixed_episodes(ds, 23, 4, 1, 5, seed=10).fingerprint()
    moved = fixed.to("cpu")
    assert torch.equal(moved[3].support_x, reference.support_x[3])
    assert sum(1 for _ in fixed) == 23


def test_episodes_indexing_and_sub_batches():
    ds = make_dataset([20] * 10)
    batch = EpisodeSampler(ds, 5, 1, 2, seed=0).sample(6)
    one = batch[2]
    assert one.support_x.shape == (5, 1, 4, 4) and torch.equal(one.query_x, batch.query_x[2])
    sub = batch.index(slice(1, 4))
    assert len(sub) == 3 and torch.equal(sub.support_y, batch.support_y[1:4])
    assert (batch.ways, batch.shots, batch.queries) == (5, 1, 2)
    assert [len(c) for c in batch.chunks(4)] == [4, 2]
    assert batch.to("cpu").support_x.device.type == "cpu"


def test_sampler_state_resumes_the_sequence():
    ds = make_dataset([20] * 10)
    sampler = EpisodeSampler(ds, 5, 1, 1, seed=0)
    sampler.sample(3)
    state = sampler.state_dict()
    expected = sampler.sample(3)
    fresh = EpisodeSampler(ds, 5, 1, 1, seed=123)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.sample(3).support_x, expected.support_x)
