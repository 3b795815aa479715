"""Time and peak memory of the similarity measures, as ratios against straightforward baselines run here.

Baselines (implemented in this file, measured in the same run):
* single pairs: Gram-form linear CKA as in Kornblith et al.'s notebook -- float64 ``K = X X^T``,
  ``L = Y Y^T``, centred by subtracting row and column means: O(n^2) memory, O(n^2 d) time;
* layer x layer matrix: pairwise recomputation -- ``similarity(measure, X_i, Y_j)`` for every pair, which
  validates, centres and decomposes both layers again for each pair;
* mean CCA and PWCCA (``--cca-only`` runs just this part): the covariance-based algorithm of google/svcca's
  ``cca_core`` written out here in float64 numpy (:func:`reference_cca_core`: covariance of the stacked
  activations, ``pinv`` and an eigendecomposition for the inverse square roots of sigma_xx and sigma_yy, SVD
  of their product; PWCCA adds the canonical variates in data space, their QR and ``|P^T X|``), and a leaner
  covariance variant (:func:`reference_covariance_lean`: three products, one eigendecomposition per side,
  singular values only). At (5000, 64) and (20000, 512), one thread, interleaved repeats, median times, both
  wall-clock and process CPU time (on a shared, loaded machine the CPU time is the steadier of the two: it
  leaves out the time spent waiting for a core, though not the slower memory and lower clock under load).

Usage::

    python benchmarks/similarity.py            # (5000, 256), (50000, 512), (2000, 12544), 16 x 16 layers, CCA
    python benchmarks/similarity.py --quick --threads 1 --repeats 3   # smaller sizes, for a shared CPU
    python benchmarks/similarity.py --cca-only --threads 1 --repeats 5  # the CCA ratios only
    python benchmarks/similarity.py --device cuda

Peak memory: on CPU the growth of the resident set (``VmHWM`` after resetting it through
``/proc/self/clear_refs``) during the call; on CUDA ``torch.cuda.max_memory_allocated`` above the start.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import gc
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from repana.compare import Comparison  # noqa: E402
from repana.similarity import RepanaWarning, StreamingLinearCKA, cca, pwcca, similarity  # noqa: E402

warnings.simplefilter("ignore", RepanaWarning)

FULL_SIZES = [(5000, 256), (50000, 512), (2000, 12544)]
QUICK_SIZES = [(2000, 128), (20000, 256), (500, 4096)]
MEASURES = ["cka", "cka_debiased", "cka_rbf", "svcca", "pwcca", "cca", "procrustes"]
GRAM_MEMORY_LIMIT = 6e9  # bytes: larger n x n work (the baseline, RBF) is skipped and its memory projected


def _limit_numpy_blas_threads(threads: int) -> None:
    """The numpy references run on numpy's BLAS: give it the same number of threads as torch (threadpoolctl,
    for the rest of the process)."""
    from threadpoolctl import threadpool_limits
    limited = threadpool_limits(threads, user_api="blas")
    if limited.get_original_num_threads().get("blas") is None and threads == 1 \
            and os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        print("note: could not set numpy's BLAS threads; run with OPENBLAS_NUM_THREADS=1 for one thread")


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
        ours, ours_mem, frame = measure(lambda: Comparison(measures=[name]).activations(acts_a, acts_b), device)
        base, base_mem, values = measure(lambda: [similarity(name, acts_a[a], acts_b[b])
                                                  for a in acts_a for b in acts_b], device)
        assert np.allclose(frame["value"].to_numpy(), values, rtol=1e-9, atol=1e-12)
        total_ours, total_base = total_ours + ours, total_base + base
        print(f"  {name:14s} matrix {ours:8.2f} s   pairwise recomputation {base:8.2f} s   "
              f"speed-up {base / ours:6.2f}x   memory {fmt_bytes(ours_mem)} vs {fmt_bytes(base_mem)}")
    ours, _, _ = measure(lambda: Comparison(measures=measures).activations(acts_a, acts_b), device)
    print(f"  all {len(measures)} measures in one Comparison.activations call: {ours:.2f} s against "
          f"{total_base:.2f} s pairwise: speed-up {total_base / ours:.2f}x")


CCA_SIZES = [(5000, 64), (20000, 512)]


def _inverse_sqrt_like_cca_core(sigma: np.ndarray) -> np.ndarray:
    """``sigma^(-1/2)`` as cca_core computes it: pseudo-inverse, then the square root through ``eigh``."""
    eigenvalues, vectors = np.linalg.eigh(np.linalg.pinv(sigma))
    return (vectors * np.sqrt(eigenvalues)) @ vectors.T


def reference_cca_core(x: np.ndarray, y: np.ndarray, weights: bool = False):
    """The covariance-based CCA of google/svcca's ``cca_core.get_cca_similarity`` (epsilon 0), float64 numpy.

    ``x (n, d_x)``, ``y (n, d_y)`` float64. Returns the canonical correlations ``(min(d_x, d_y),)``, and with
    ``weights`` the PWCCA value (weights from ``x``) computed as ``compute_pwcca`` does: canonical variates
    in data space, their QR ``P``, weights ``sum_j |P^T x_j|`` (here from the centred variates).
    """
    acts_x, acts_y = x.T, y.T  # cca_core's layout: (neurons, datapoints)
    d_x = acts_x.shape[0]
    covariance = np.cov(acts_x, acts_y)
    sigma_xx, sigma_xy = covariance[:d_x, :d_x], covariance[:d_x, d_x:]
    sigma_yy = covariance[d_x:, d_x:]
    x_max, y_max = np.max(np.abs(sigma_xx)), np.max(np.abs(sigma_yy))
    sigma_xx, sigma_yy, sigma_xy = sigma_xx / x_max, sigma_yy / y_max, sigma_xy / np.sqrt(x_max * y_max)
    inv_sqrt_xx, inv_sqrt_yy = _inverse_sqrt_like_cca_core(sigma_xx), _inverse_sqrt_like_cca_core(sigma_yy)
    u, rho, _ = np.linalg.svd(inv_sqrt_xx @ (sigma_xy @ inv_sqrt_yy))
    if not weights:
        return rho
    centred_x = acts_x - acts_x.mean(axis=1, keepdims=True)
    directions = (u.T @ inv_sqrt_xx) @ centred_x  # canonical variates of x, (d_x, n)
    basis, _ = np.linalg.qr(directions.T)
    loadings = np.abs(basis.T @ centred_x.T).sum(axis=1)
    k = rho.shape[0]
    return rho, float((loadings[:k] / loadings[:k].sum() * rho).sum())


def reference_covariance_lean(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Covariance-based canonical correlations without cca_core's extras: ``X^T X``, ``Y^T Y``, ``X^T Y``, one
    ``eigh`` per side for the inverse square roots, singular values only."""
    centred_x, centred_y = x - x.mean(axis=0), y - y.mean(axis=0)

    def inverse_sqrt(sigma):
        eigenvalues, vectors = np.linalg.eigh(sigma)
        return (vectors / np.sqrt(eigenvalues)) @ vectors.T
    product = inverse_sqrt(centred_x.T @ centred_x) @ (centred_x.T @ centred_y) @ inverse_sqrt(centred_y.T @ centred_y)
    return np.linalg.svd(product, compute_uv=False)


def bench_cca(sizes, repeats: int) -> None:
    """Median time of each contender over interleaved repeats; ratios against the references, values checked."""
    print("\nmean CCA and PWCCA against the covariance-based reference (float64 inputs, median of interleaved "
          "repeats)")
    for n, d in sizes:
        x, y = (t.double().numpy() for t in make_pair(n, d, torch.device("cpu"), seed=2))
        size_repeats = repeats if n * d * d > 1e8 else max(repeats, 31)  # small sizes: cheap, and noisier
        contenders = {
            "cca_core mean CCA": lambda: float(reference_cca_core(x, y).mean()),
            "lean covariance mean CCA": lambda: float(reference_covariance_lean(x, y).mean()),
            "repana cca().mean": lambda: cca(x, y).mean,
            "cca_core PWCCA": lambda: reference_cca_core(x, y, weights=True)[1],
            "repana pwcca": lambda: pwcca(x, y),
            # The floor of any exact covariance-based method: the 2 n d^2 multiply-adds of X^T X, Y^T Y
            # (symmetric rank-k updates) and X^T Y, which np.cov of the stacked activations also spends.
            "products X^T X, Y^T Y, X^T Y": lambda: float((x.T @ x)[0, 0] + (y.T @ y)[0, 0] + (x.T @ y)[0, 0]),
        }
        times = {name: [] for name in contenders}
        cpu_times = {name: [] for name in contenders}
        values = {}
        for _ in range(size_repeats):
            for name, function in contenders.items():
                start, cpu_start = time.perf_counter(), time.process_time()
                values[name] = function()
                cpu_times[name].append(time.process_time() - cpu_start)
                times[name].append(time.perf_counter() - start)
        median = {name: float(np.median(samples)) for name, samples in times.items()}
        cpu_median = {name: float(np.median(samples)) for name, samples in cpu_times.items()}
        print(f"  (n, d) = ({n}, {d}), {size_repeats} repeats; wall-clock and process CPU time")
        for name in contenders:
            print(f"    {name:26s} {median[name] * 1e3:9.1f} ms  cpu {cpu_median[name] * 1e3:9.1f} ms  "
                  f"value {values[name]:.12f}")
        assert abs(values["repana cca().mean"] - values["cca_core mean CCA"]) < 1e-8
        assert abs(values["repana cca().mean"] - values["lean covariance mean CCA"]) < 1e-8
        assert abs(values["repana pwcca"] - values["cca_core PWCCA"]) < 1e-8
        floor = "products X^T X, Y^T Y, X^T Y"
        print(f"    the products alone bound the mean CCA ratio against the cca_core recipe by "
              f"{median['cca_core mean CCA'] / median[floor]:.2f}x wall-clock, "
              f"{cpu_median['cca_core mean CCA'] / cpu_median[floor]:.2f}x CPU time "
              f"({2 * n * d * d / 1e9:.3g} G multiply-adds on either side)")
        for label, med in (("wall-clock", median), ("CPU time", cpu_median)):
            print(f"    speed ratios, {label} (reference / repana): mean CCA "
                  f"{med['cca_core mean CCA'] / med['repana cca().mean']:.2f}x against the cca_core recipe, "
                  f"{med['lean covariance mean CCA'] / med['repana cca().mean']:.2f}x against the lean "
                  f"covariance route; PWCCA {med['cca_core PWCCA'] / med['repana pwcca']:.2f}x against the "
                  f"cca_core recipe (values equal to 1e-8)")


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
                                                                 "(a shared machine's load varies); the CCA part "
                                                                 "reports the median of max(3, repeats)")
    parser.add_argument("--cca-only", action="store_true", help="only the CCA / PWCCA ratios against cca_core")
    parser.add_argument("--skip-cca", action="store_true", help="skip the CCA / PWCCA ratios (CPU only)")
    args = parser.parse_args()
    global REPEATS
    REPEATS = max(1, args.repeats)
    if args.threads:
        torch.set_num_threads(args.threads)  # repana's numpy products follow torch's count (similarity/_blas.py)
        _limit_numpy_blas_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    # First, before the allocator is switched to mmap-per-allocation for the memory measurements below (page
    # faults on every fresh array would tax the allocating contenders).
    if device.type == "cpu" and not args.skip_cca:
        bench_cca(CCA_SIZES, max(3, args.repeats))
    if args.cca_only:
        return
    _make_rss_measurable()
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
