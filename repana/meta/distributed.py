"""Data-parallel meta-training with ``torch.distributed`` (run under ``torchrun``).

Every rank draws the same meta-batch (batches are a pure function of ``(seed, step)``), takes its
contiguous share of the tasks, computes the meta-gradient averaged over its own tasks, and the ranks
all-reduce ``n_local * grad`` (a sum), then divide by the meta-batch size: the result is the average
over all tasks, as in one process. Every rank applies the same Adam step, so parameters stay equal
without broadcasting. Only rank 0 writes files (config, metrics, checkpoints) and validates.

    torchrun --nproc_per_node 4 -m repana train --preset omniglot-20way-1shot --device cuda --out runs/o20
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


def shard_bounds(n_items: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous share ``[start, stop)`` of ``n_items`` for ``rank``; sizes differ by at most 1."""
    base, extra = divmod(n_items, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


@dataclass
class DistributedContext:
    """The process group of this run: ``rank`` in ``[0, world_size)``."""

    rank: int
    world_size: int

    def meta_gradients(self, algorithm, model: torch.nn.Module, batch, device) -> tuple[dict, dict]:
        """The meta-batch's average meta-gradient and metrics, computed across all ranks.

        ``batch``: the full meta-batch (identical on every rank). Returns ``(grads, metrics)`` like
        ``algorithm.meta_gradients`` on the whole batch: grads name -> Tensor, metrics name -> float.
        """
        from repana.meta.train import batch_size_of, batch_to, shard_batch

        n_total = batch_size_of(batch)
        start, stop = shard_bounds(n_total, self.rank, self.world_size)
        n_local = stop - start
        names = [name for name, _ in model.named_parameters()]
        params = dict(model.named_parameters())
        grads, metrics = ({}, {})
        if n_local:
            grads, metrics = algorithm.meta_gradients(model, batch_to(shard_batch(batch, start, stop), device))
        metric_names = ("loss", "accuracy")
        # One flat vector: weighted grads, "has a grad" flags, weighted metrics.
        pieces = []
        for name in names:
            g = grads.get(name)
            pieces.append((g.detach() * n_local).reshape(-1) if g is not None
                          else torch.zeros(params[name].numel(), device=params[name].device, dtype=params[name].dtype))
        dtype = next(model.parameters()).dtype
        flags = torch.tensor([float(grads.get(n) is not None) for n in names], device=pieces[0].device,
                             dtype=dtype)
        values = torch.tensor([float(metrics.get(m, 0.0)) * n_local for m in metric_names], device=flags.device,
                              dtype=dtype)
        flat = torch.cat([p.to(flags.dtype) for p in pieces] + [flags, values])
        torch_dist.all_reduce(flat, op=torch_dist.ReduceOp.SUM)
        out_grads, offset = {}, 0
        summed_flags = flat[-len(metric_names) - len(names):-len(metric_names)]
        for i, name in enumerate(names):
            size = params[name].numel()
            if summed_flags[i] > 0:
                out_grads[name] = (flat[offset:offset + size] / n_total).reshape(params[name].shape)
            offset += size
        summed_values = flat[-len(metric_names):]
        out_metrics = {m: float(summed_values[i]) / n_total for i, m in enumerate(metric_names)}
        return out_grads, out_metrics

    def barrier(self) -> None:
        torch_dist.barrier()


def init_from_environment(device: str = "cpu") -> tuple[DistributedContext | None, str]:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``).

    Returns ``(context, device)``: ``(None, device)`` outside torchrun or with one process. With
    ``device="cuda"`` each rank uses ``cuda:LOCAL_RANK`` and the NCCL backend, else gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None, device
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = str(device).startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistributedContext(rank=rank, world_size=world_size), device


def shutdown() -> None:
    """Leave the process group (if any), after every rank has arrived: a rank that tore its gloo group down
    while a peer still validated or wrote checkpoints aborted that peer ("terminate called without an active
    exception")."""
    if torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()
