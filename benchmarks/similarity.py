"""Time and peak memory of the similarity measures, as ratios against straightforward baselines run here.

Baselines (implemented in this file, measured in the same run):
* single pairs: Gram-form linear CKA as in Kornblith et al.'s notebook -- float64 ``K = X X^T``,
  ``L = Y Y^T``, centred by subtracting row and column means: O(n^2) memory, O(n^2 d) time;
* layer x layer matrix: pairwise recomputation -- ``similarity(measure, X_i, Y_j)`` for every pair, which
  validates, centres and decomposes both layers again for each pair.

Usage::

    python benchmarks/similarity.py            # (5000, 256), (50000, 512), (2000, 12544), 16 x 16 layers
    python benchmarks/similarity.py --quick --threads 1 --repeats 3   # smaller sizes, for a shared CPU
    python benchmarks/similarity.py --device cuda

Peak memory: on CPU the growth of the resident set (``VmHWM`` after resetting it through
``/proc/self/clear_refs``) during the call; on CUDA ``torch.cuda.max_memory_allocated`` above the start.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from repana.compare import compare_activations  # noqa: E402
from repana.similarity import RepanaWarning, StreamingLinearCKA, similarity  # noqa: E402

warnings.simplefilter("ignore", RepanaWarning)

FULL_SIZES = [(5000, 256), (50000, 512), (2000, 12544)]
QUICK_SIZES = [(2000, 128), (20000, 256), (500, 4096)]
MEASURES = ["cka", "cka_debiased", "cka_rbf", "svcca", "pwcca", "cca", "procrustes"]
GRAM_MEMORY_LIMIT = 6e9  # bytes: larger n x n work (the baseline, RBF) is skipped and its memory projected


def _make_rss_measurable() -> None:
    """glibc: serve every allocation over 64 KiB by mmap (returned to the OS on free), so that the resident
    set of one call is not hidden by heap pages kept from an earlier one."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 65536)  # M_MMAP_THRESHOLD; setting it also disables glibc's dynamic threshold
        libc.malloc_trim(0)
    except OSError:
        pass


class PeakMemory:
    """Peak extra memory (bytes) while the block runs: CPU resident set or CUDA allocations."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            self.start = _status("VmRSS")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self.peak = _status("VmHWM") - self.start


def _status(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


REPEATS = 1  # set by --repeats: the time reported is the fastest of this many calls


def measure(function, device):
    """(seconds, peak bytes, result): the fastest of ``REPEATS`` calls and the first call's peak memory."""
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        result = function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    for _ in range(REPEATS - 1):
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = min(seconds, time.perf_counter() - start)
    return seconds, memory.peak, result


def _centre_gram(gram: torch.Tensor) -> torch.Tensor:
    means = gram.mean(dim=0)
    gram -= means[:, None]
    gram -= means[None, :]
    gram += means.mean()
    return gram


def baseline_gram_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA in Gram form as usually written: float64 Gram matrices, centred in place."""
    x, y = x.double(), y.double()
    gram_x = _centre_gram(x @ x.T)
    gram_y = _centre_gram(y @ y.T)
    return float((gram_x * gram_y).sum() / torch.sqrt((gram_x * gram_x).sum() * (gram_y * gram_y).sum()))


def make_pair(n: int, d: int, device, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, 64, generator=generator)
    x = torch.tanh(latent @ torch.randn(64, d, generator=generator)) + 0.5 * torch.randn(n, d, generator=generator)
    y = torch.relu(latent @ torch.randn(64, d, generator=generator)) + 0.5 * torch.randn(n, d, generator=generator)
    return x.to(device), y.to(device)


def fmt_bytes(value: float) -> str:
    return f"{value / 2**20:9.1f} MB" if value < 2**30 else f"{value / 2**30:9.2f} GB"


def bench_pairs(sizes, device) -> None:
    for n, d in sizes:
        x, y = make_pair(n, d, device)
        print(f"\n(n, d) = ({n}, {d}), float32 input on {device}")
        gram_bytes = 3 * n * n * 8  # K, L and a temporary (float64)
        if gram_bytes <= GRAM_MEMORY_LIMIT:
            base_time, base_mem, base_value = measure(lambda: baseline_gram_cka(x, y), device)
            print(f"  {'baseline gram CKA':22s} {base_time:8.2f} s {fmt_bytes(base_mem)}  value {base_value:.6f}")
        else:
            base_time, base_mem, base_value = None, gram_bytes, None
            print(f"  {'baseline gram CKA':22s} not run: needs about {fmt_bytes(gram_bytes)} (n x n float64 matrices)")
        for name in MEASURES:
            if name == "cka_rbf" and gram_bytes > GRAM_MEMORY_LIMIT:
                print(f"  {name:22s} skipped: the RBF kernel needs n x n matrices ({fmt_bytes(gram_bytes)})")
                continue
            try:
                seconds, peak, value = measure(lambda: similarity(name, x, y), device)
            except Exception as error:  # a documented refusal (CCA with too few datapoints) is a result too
                print(f"  {name:22s} refused: {str(error)[:110]}...")
                continue
            time_ratio = f"{seconds / base_time:7.3f}x time" if base_time else "   (no baseline time)"
            print(f"  {name:22s} {seconds:8.2f} s {fmt_bytes(peak)}  value {value:.6f}  "
                  f"{time_ratio}  {peak / max(base_mem, 1):8.4f}x memory of baseline"
                  + ("" if base_time else " (projected)"))
            if name == "cka" and base_value is not None:
                assert abs(value - base_value) < 1e-8, (value, base_value)
        if d > n:
            print(f"  {'streaming cka (4096)':22s} skipped: its statistics are d x d ({fmt_bytes(3 * d * d * 8)}); "
                  f"for d > n the in-memory Gram form is the right tool")
            continue
        seconds, peak, value = measure(lambda: streaming_cka(x, y), device)
        assert abs(value - similarity("cka", x, y)) < 1e-8
        time_ratio = f"{seconds / base_time:7.3f}x time" if base_time else "   (no baseline time)"
        print(f"  {'streaming cka (4096)':22s} {seconds:8.2f} s {fmt_bytes(peak)}  value {value:.6f}  "
              f"{time_ratio}  {peak / max(base_mem, 1):8.4f}x memory of baseline"
              + ("" if base_time else " (projected)"))


def streaming_cka(x: torch.Tensor, y: torch.Tensor, chunk: int = 4096) -> float:
    """Exact plain linear CKA from chunks of 4096 datapoints: memory O(d^2 + chunk d), not O(n d)."""
    accumulator = StreamingLinearCKA()
    for start in range(0, x.shape[0], chunk):
        accumulator.update({"x": x[start:start + chunk]}, {"y": y[start:start + chunk]})
    return accumulator.value("x", "y")


def bench_matrix(n_layers: int, n: int, d: int, measures: list[str], device) -> None:
    generator = torch.Generator().manual_seed(1)
    latent = torch.randn(n, 32, generator=generator)

    def layers(offset):
        return {f"layer{i:02d}": (torch.tanh(latent @ torch.randn(32, d, generator=generator) * (1 + 0.1 * i))
                                  + (0.3 + offset) * torch.randn(n, d, generator=generator)).to(device)
                for i in range(n_layers)}

    acts_a, acts_b = layers(0.0), layers(0.2)
    print(f"\n{n_layers} x {n_layers} layer matrix, each layer (n, d) = ({n}, {d}) float32 on {device}")
    total_ours = total_base = 0.0
    for name in measures:
        ours, ours_mem, frame = measure(lambda: compare_activations(acts_a, acts_b, measures=[name]), device)
        base, base_mem, values = measure(lambda: [similarity(name, acts_a[a], acts_b[b])
                                                  for a in acts_a for b in acts_b], device)
        assert np.allclose(frame["value"].to_numpy(), values, rtol=1e-9, atol=1e-12)
        total_ours, total_base = total_ours + ours, total_base + base
        print(f"  {name:14s} matrix {ours:8.2f} s   pairwise recomputation {base:8.2f} s   "
              f"speed-up {base / ours:6.2f}x   memory {fmt_bytes(ours_mem)} vs {fmt_bytes(base_mem)}")
    ours, _, _ = measure(lambda: compare_activations(acts_a, acts_b, measures=measures), device)
    print(f"  all {len(measures)} measures in one compare_activations call: {ours:.2f} s against "
          f"{total_base:.2f} s pairwise: speed-up {total_base / ours:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (minutes on a shared 2-core CPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-pairs", action="store_true")
    parser.add_argument("--skip-matrix", action="store_true")
    parser.add_argument("--matrix", choices=["tall", "wide", "both"], default="both",
                        help="layer matrices with n > d (feature form), d > n (Gram form), or both")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice); on a shared, "
                                                    "oversubscribed CPU 1 thread is far faster for LAPACK calls")
    parser.add_argument("--repeats", type=int, default=1, help="report the fastest of this many calls "
                                                                 "(a shared machine's load varies)")
    args = parser.parse_args()
    global REPEATS
    REPEATS = max(1, args.repeats)
    if args.threads:
        torch.set_num_threads(args.threads)
    _make_rss_measurable()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    if not args.skip_pairs:
        bench_pairs(QUICK_SIZES if args.quick else FULL_SIZES, device)
    if not args.skip_matrix and args.matrix in ("tall", "both"):  # n > d: feature form, per-pair d x d work
        if args.quick:
            bench_matrix(16, 1000, 64, ["cka", "cka_debiased", "svcca", "procrustes"], device)
        else:
            bench_matrix(16, 2000, 256, ["cka", "cka_debiased", "svcca", "pwcca", "procrustes"], device)
    if not args.skip_matrix and args.matrix in ("wide", "both"):  # d > n (flattened conv maps): Gram form
        if args.quick:
            bench_matrix(16, 300, 1024, ["cka", "cka_debiased", "procrustes"], device)
        else:
            bench_matrix(16, 500, 2048, ["cka", "cka_debiased", "procrustes"], device)


if __name__ == "__main__":
    main()
