"""Two-process data-parallel training (gloo, CPU) equals one process on the same meta-batches."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from repana.data.dataset import ImageClassDataset
from repana.meta.checkpoint import load_checkpoint
from repana.meta.config import from_dict
from repana.meta.distributed import DistributedContext, shard_bounds
from repana.meta.train import train


def _dataset(n_classes: int, seed: int, per_class: int = 6, size: int = 16) -> ImageClassDataset:
    rng = np.random.default_rng(seed)
    prototypes = rng.random((n_classes, size, size)) < 0.3
    flips = rng.random((n_classes, per_class, size, size)) < 0.1
    images = (prototypes[:, None] ^ flips).astype(np.uint8)[:, :, None] * 255
    return ImageClassDataset(images.reshape(-1, 1, size, size), np.repeat(np.arange(n_classes), per_class),
                             [f"c{i}" for i in range(n_classes)])


def _config(algorithm: str):
    # meta-batch 3 over 2 ranks: shards of 2 and 1 tasks, so the weighting by task count matters
    return from_dict(dict(name="d", dataset="glyphs", image_size=16, hidden=8, ways=3, shots=1, queries_train=2,
                          queries_test=2, algorithm=algorithm, meta_batch_size=3, inner_lr=0.4,
                          inner_steps_train=2, inner_steps_test=1, iterations=3, val_every=3, val_episodes=4,
                          log_every=1, checkpoint_every=3))


def _data() -> dict:
    return {"train": _dataset(12, seed=0), "val": _dataset(6, seed=1)}


ALGORITHMS = ("maml", "anil")


def _one_batch(algorithm: str):
    from repana.meta.train import BatchSource, make_algorithm
    from repana.models import build_model

    config = _config(algorithm)
    torch.manual_seed(0)
    model = build_model(config.model_config())
    algo = make_algorithm(config)
    return model, algo, BatchSource(config, _data()["train"], algo.batch_kind)(1)


#: A rank that fails leaves the other blocked in a collective: it gives up after this long, not gloo's 30 min.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=5)


def _worker(rank: int, world_size: int, store: str, tmp: str) -> None:
    """Per algorithm: the meta-gradient of one meta-batch across ranks, then a 3-step training run.

    Teardown: rank 1 ends its training runs before rank 0, which alone validates and writes checkpoints. A
    rank that destroyed its gloo process group (and exited) while the other still held its connections
    could kill that one with SIGABRT ("terminate called without an active exception", gloo's threads
    torn down by the peer's hang-up). So every rank waits at a barrier until all are done, then leaves the
    group, and the process group is rendezvoused through a file (no port to race for)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size,
                            timeout=COLLECTIVE_TIMEOUT)
    context = DistributedContext(rank=rank, world_size=world_size)
    try:
        for algorithm in ALGORITHMS:
            model, algo, batch = _one_batch(algorithm)
            grads, metrics = context.meta_gradients(algo, model, batch, "cpu")
            if rank == 0:
                torch.save({"grads": grads, "metrics": metrics}, f"{tmp}/grads_{algorithm}.pt")
            train(_config(algorithm), f"{tmp}/{algorithm}_rank{rank}", data=_data(), show_progress=False,
                  dist=context)
        dist.barrier()  # nobody tears down while another rank still works
        Path(tmp, f"done_rank{rank}").write_text("done")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    store = tmp / "store"  # a fresh rendezvous file per run, never reused
    assert not store.exists()
    context = mp.spawn(_worker, args=(2, str(store), str(tmp)), nprocs=2, join=False)
    while not context.join():  # raises if a worker fails or dies by a signal
        pass
    assert all(process.exitcode == 0 for process in context.processes)
    assert sorted(p.name for p in tmp.glob("done_rank*")) == ["done_rank0", "done_rank1"]
    return tmp


def test_shard_bounds_cover_the_batch_once():
    assert [shard_bounds(3, r, 2) for r in range(2)] == [(0, 2), (2, 3)]
    assert [shard_bounds(2, r, 4) for r in range(4)] == [(0, 1), (1, 2), (2, 2), (2, 2)]
    for n in range(0, 9):
        for world in range(1, 5):
            covered = [i for r in range(world) for i in range(*shard_bounds(n, r, world))]
            assert covered == list(range(n))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_two_process_meta_gradient_equals_one_process(two_process_results, algorithm):
    model, algo, batch = _one_batch(algorithm)
    grads, metrics = algo.meta_gradients(model, batch)
    shared = torch.load(two_process_results / f"grads_{algorithm}.pt", weights_only=True)
    assert set(shared["grads"]) == set(grads)
    for name, value in grads.items():
        torch.testing.assert_close(shared["grads"][name], value, rtol=1e-5, atol=1e-5, msg=name)  # float32 summation order
    assert shared["metrics"]["loss"] == pytest.approx(metrics["loss"], rel=1e-6)
    assert shared["metrics"]["accuracy"] == pytest.approx(metrics["accuracy"], rel=1e-6)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_two_process_training_equals_one_process(tmp_path, two_process_results, algorithm):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(_config(algorithm), tmp_path / "single", data=_data(), show_progress=False)
    finally:
        torch.set_num_threads(threads)
    one = load_checkpoint(tmp_path / "single" / "checkpoints" / "latest.pt")
    two = load_checkpoint(two_process_results / f"{algorithm}_rank0" / "checkpoints" / "latest.pt")
    assert one.step == two.step == 3
    for name, value in one.state_dict.items():
        if name.endswith("conv.bias"):
            # A conv bias followed by batch norm has a meta-gradient of exactly 0 in exact arithmetic;
            # in float32 it is rounding noise (~1e-9) that Adam rescales to full-size steps, so its
            # value depends on summation order. Its gradient agreement is checked in the test above.
            continue
        torch.testing.assert_close(two.state_dict[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert not (two_process_results / f"{algorithm}_rank1").exists()  # only rank 0 writes
    rows_one = (tmp_path / "single" / "metrics.csv").read_text().splitlines()
    rows_two = (two_process_results / f"{algorithm}_rank0" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in rows_one] == [r.split(",")[:2] for r in rows_two]
    for a, b in zip(rows_one[1:], rows_two[1:]):  # task-weighted means of loss and accuracy
        a, b = a.split(","), b.split(",")
        if a[1] == "train":
            assert float(a[2]) == pytest.approx(float(b[2]), rel=1e-4)
        assert float(a[3]) == pytest.approx(float(b[3]), abs=1e-6)
