"""One layer's activations prepared once: validated in float64, with lazily cached statistics.

Every measure is written as a function of two :class:`Representation` objects, so a layer x layer
comparison pays for each layer's centring, SVD, Gram or covariance matrix once, not once per pair.
The functions of raw arrays (``cka(X, Y)`` ...) simply wrap their inputs in Representations.

Centred products without the centred copy: when no feature's mean is large against its spread
(:data:`RAW_MOMENTS_MAX_OFFSET`), ``Xc^T Xc`` and ``Xc^T Yc`` are computed from the uncentred float64 data
as ``X^T X - n m m^T`` (one pass over memory fewer and no ``(n, d)`` copy; for float64 input the caller's
own array is read in place). The centred array is made only when a measure needs it (SVD, Gram matrix,
custom measures reading :attr:`Representation.centered`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from repana.errors import InputError
from repana.similarity._arrays import (as_float64_shaped_matrix, as_real_tensor, check_same_datapoints,
                                      finite_max_abs, input_eps, max_abs)
from repana.similarity._blas import column_sums, matmul


#: Smallest relative rank tolerance served by the eigendecomposition route of :meth:`Representation.svd`.
EIGH_MIN_RTOL = 1e-6


#: Activations whose largest magnitude lies outside ``[2**-SAFE_EXPONENT, 2**SAFE_EXPONENT]`` are multiplied
#: by a power of two (exact: only the exponents change) so that squares and fourth powers (Gram products,
#: HSIC) neither overflow nor underflow float64. Every measure is invariant to isotropic scaling.
SAFE_EXPONENT = 64

#: Largest ``n mean_j**2 / ||Xc[:, j]||**2`` (squared mean over biased variance of a feature) for which products
#: of centred data are computed from the uncentred data (``X^T X - n m m^T``). The rounding of ``X^T X`` scales
#: with ``||X[:, j]||**2 = (1 + offset) ||Xc[:, j]||**2``: at an offset of 3 (a mean of up to sqrt(3) standard
#: deviations, e.g. ReLU activations, ~0.5) the error bound is at most 2.4x that of centring first (the
#: centred route's own bound carries ``||X[:, j]||`` through the rounding of the mean), far inside the 100x margin
#: of the CCA tolerance (see :data:`repana.similarity.cca.CHOLESKY_MIN_SINGULAR_RATIO`). A layer with any
#: feature beyond it is centred first, as before (float32 activations with a large mean offset).
RAW_MOMENTS_MAX_OFFSET = 3.0

#: Bandwidth conventions of the RBF kernel (``sigma`` from the median distance; see :meth:`Representation.kernel_gram`).
BANDWIDTHS = ("median_distinct_pairs", "median_all_entries")


class Representation:
    """Activations ``(n_datapoints, n_features)`` centred in float64 on the input's device.

    Attributes:
        centered: float64 tensor ``(n, d)``, column means removed (after the float64 cast), times
            ``2**scale_exponent``; made on first access (see the module docstring).
        scale_exponent: ``0``, or ``k`` when the activations were multiplied by ``2**k`` because their
            magnitude was beyond ``2**±SAFE_EXPONENT`` (e.g. data scaled by 1e200): the original centred
            activations are ``centered * 2.0**-k``. Only custom measures that are not scale invariant need it.
        n, d: numbers of datapoints and features.
        eps: machine epsilon of the input dtype (integers: float64's), behind the default rank tolerance
            (:meth:`rank_rtol`); every computation is float64 whatever it is.
        name: used in error messages.

    Cached on first use: the thin SVD truncated at the numerical rank, the covariance ``Xc^T Xc`` (d x d),
    the Gram matrix ``Xc Xc^T`` (n x n), kernel Gram matrices centred (biased or U-centred).
    """

    def __init__(self, array, name: str = "X", min_datapoints: int = 2):
        if isinstance(array, Representation):
            raise InputError("already a Representation; pass it directly to the *_from_representations functions")
        source = as_real_tensor(array, name)
        data = as_float64_shaped_matrix(source, name, min_datapoints=min_datapoints)
        # A float64 source is the caller's memory (numpy, torch, a DataFrame's block): never modified. Any other
        # dtype was copied by the cast, and that private copy is rescaled in place, and centred in place when
        # the centred data are made.
        private = source.dtype != torch.float64
        self.name = name
        self.eps = input_eps(source.dtype)
        self.n, self.d = data.shape
        self._cache: dict = {}
        sums, sq_sums = column_sums(data)
        # The values are checked by this pass: NaN and Inf reach the column sums of squares, and their largest
        # bounds the magnitude (see _magnitude_bound). Only when it cannot vouch for finite values in the safe
        # range does the exact check run (aminmax; the NaN / Inf error is raised there).
        largest_bound = _magnitude_bound(sq_sums, self.n)
        largest = finite_max_abs(data, name) if largest_bound is None else None
        self.scale_exponent = 0 if largest is None else _rescaling_exponent(largest)
        if self.scale_exponent:
            data = _times_power_of_two(data, self.scale_exponent, inplace=private)
            largest, private = max_abs(data), True
            sums, sq_sums = column_sums(data)
        means = sums / self.n
        offset_sq = self.n * means * means  # n m_j^2 = ||X[:, j]||^2 - ||Xc[:, j]||^2
        # Raw moments when (1 + c) n m_j^2 <= c ||X[:, j]||^2, i.e. n m_j^2 <= c ||Xc[:, j]||^2 (c the max offset):
        # then ||Xc[:, j]||^2 = ||X[:, j]||^2 - n m_j^2 loses at most 2 bits to cancellation. A constant nonzero
        # column never qualifies (its offset is infinite).
        limit = RAW_MOMENTS_MAX_OFFSET
        self._raw_moments = bool(((1.0 + limit) * offset_sq <= limit * sq_sums).all())
        self._raw, self._means, self._private = data, means, private
        self._centered: torch.Tensor | None = None
        if self._raw_moments:
            norm = float((sq_sums - offset_sq).clamp_(min=0.0).sum()) ** 0.5
        else:
            largest = max_abs(data) if largest is None else largest  # before a private copy is centred in place
            norm = float(torch.linalg.vector_norm(self.centered))
        self._cache["sq_norm"] = norm * norm
        # After centring, a constant column is 0 up to rounding of the mean (~n * eps * |value| per entry).
        tolerance_per_magnitude = 8 * self.n * torch.finfo(torch.float64).eps * (self.n * self.d) ** 0.5
        if norm <= tolerance_per_magnitude * (largest_bound if largest is None else largest):
            if largest is None:  # decide with the exact magnitude (the bound is larger); data not centred yet
                largest = max_abs(data)
            if norm <= tolerance_per_magnitude * largest:
                raise InputError(f"{name} is constant across its {self.n} datapoints (zero variance in every "
                                 f"feature); similarity with a constant representation is undefined")

    @classmethod
    def _from_centered(cls, centered: torch.Tensor, name: str, eps: float,
                       scale_exponent: int = 0) -> "Representation":
        rep = cls.__new__(cls)
        rep.name, rep.eps, rep.scale_exponent = name, eps, scale_exponent
        rep.n, rep.d = centered.shape
        rep._centered, rep._raw, rep._means, rep._private, rep._raw_moments = centered, None, None, False, False
        rep._cache = {}
        return rep

    @property
    def centered(self) -> torch.Tensor:
        """``(n, d)`` float64, column means removed; made on first access (in place for a private copy)."""
        if self._centered is None:
            mean = self._means[None, :]
            self._centered = self._raw.sub_(mean) if self._private else self._raw - mean
            if self._private:
                self._raw = None  # its memory now holds the centred data
        return self._centered

    def _product_operand(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(A, m)`` with ``A^T B - n m_A m_B^T = Xc^T Yc``: the uncentred data and its column means when raw
        moments are allowed and the data are still held, else the centred data and ``None`` (no correction:
        ``Xc^T 1 = 0``, so a centred operand needs none whatever the other one is)."""
        if self._raw_moments and self._raw is not None:
            return self._raw, self._means
        return self.centered, None

    def cross(self, other: "Representation") -> torch.Tensor:
        """``Xc^T Yc``, ``(d_x, d_y)``; the last result is kept, so several measures of one pair share it."""
        return self._pair_cached("cross", other, lambda: _centred_product(self, other))

    def basis_cross(self, other: "Representation", rtol: float | None = None) -> torch.Tensor:
        """``Ux^T Uy`` of the rank-truncated left singular bases, ``(rank_x, rank_y)``, kept like :meth:`cross`.

        Columns follow descending singular values, so the top ``k`` directions' product is the leading block.
        """
        return self._pair_cached(("basis_cross", rtol), other, lambda: self.svd(rtol)[0].T @ other.svd(rtol)[0])

    def top_basis_cross(self, other: "Representation", kx: int, ky: int, rtol: float | None = None) -> torch.Tensor:
        """``Ux[:, :kx]^T Uy[:, :ky]``: a block of :meth:`basis_cross` when that is at hand or not much
        larger, else computed directly (SVCCA with a few directions of a wide layer)."""
        key = ("basis_cross", rtol)
        last = self.__dict__.get("_last_pair", {})
        if (key in last and last[key][0] is other) or 4 * kx * ky >= self.rank(rtol) * other.rank(rtol):
            return self.basis_cross(other, rtol)[:kx, :ky]
        return self.svd(rtol)[0][:, :kx].T @ other.svd(rtol)[0][:, :ky]

    def _pair_cached(self, key, other: "Representation", compute) -> torch.Tensor:
        # Only the most recent partner is remembered (a strong reference, so its id cannot be reused).
        last = self.__dict__.setdefault("_last_pair", {})
        if key not in last or last[key][0] is not other:
            last[key] = (other, compute())
        return last[key][1]

    @property
    def device(self) -> torch.device:
        return (self._raw if self._centered is None else self._centered).device

    def cached(self, key, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    # --- per-layer statistics -------------------------------------------------------------------
    def rank_rtol(self, rtol: float | None = None) -> float:
        """Relative tolerance under which singular values count as null (``rtol`` when given).

        Default ``max(max(n, d) * min(eps, eps_float32), 2 * eps)`` with ``eps`` the input dtype's epsilon:
        numpy.linalg.matrix_rank's rule ``max(n, d) * eps`` for float64 (2.2e-16) and float32 (1.19e-7), so
        a float32 layer of rank 16 has 16 directions, not 64 with 48 of rounding noise. Half precision rounds
        every value by up to ``eps / 2`` (float16 9.8e-4, bfloat16 7.8e-3): ``max(n, d) * eps`` would pass 1
        from a few hundred datapoints on and drop every direction, so it gets float32's rule, but never below
        ``2 * eps``, under which the rounding noise of a rank-deficient layer sits (measured: bfloat16 noise
        directions at 8e-4 of the top singular value).
        """
        if rtol is not None:
            return float(rtol)
        float32_eps = float(torch.finfo(torch.float32).eps)
        return max(max(self.n, self.d) * min(self.eps, float32_eps), 2.0 * self.eps)

    def svd(self, rtol: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Thin SVD ``Xc = U diag(S) Vh`` keeping singular values ``> rtol * S.max()`` (null directions dropped).

        Returns ``U (n, r)``, ``S (r,)`` descending, ``Vh (r, d)`` with ``r`` the numerical rank.

        When the tolerance is at least ``EIGH_MIN_RTOL`` (the default for float32 activations:
        ``max(n, d) * 1.2e-7``), the SVD comes from the float64 eigendecomposition of the smaller of
        ``Xc^T Xc`` and ``Xc Xc^T`` (a few times faster than a direct SVD): eigenvalues are exact to
        ``~1e-16 * S.max()^2``, so every singular value above the tolerance is exact to ``< 1e-5`` relative.
        Smaller tolerances (float64 activations) use a direct SVD (LAPACK gesdd).
        """
        tolerance = self.rank_rtol(rtol)
        if tolerance >= EIGH_MIN_RTOL:
            u, s, vh = self.cached("svd_eigh", self._svd_from_eigh)
        else:
            u, s, vh = self.cached("svd_exact", lambda: torch.linalg.svd(self.centered, full_matrices=False))
        keep = int((s > tolerance * s[0]).sum())
        return u[:, :keep], s[:keep], vh[:keep]

    def _svd_from_eigh(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        small = self.covariance if self.d <= self.n else self.gram
        eigenvalues, vectors = torch.linalg.eigh(small)
        eigenvalues, vectors = eigenvalues.flip(0), vectors.flip(1)  # descending
        s = eigenvalues.clamp(min=0.0).sqrt()
        # Directions this far below the largest carry only rounding noise; dropping them avoids 0 / 0.
        keep = int((s > EIGH_MIN_RTOL * 1e-2 * s[0]).sum())
        s, vectors = s[:keep], vectors[:, :keep]
        if self.d <= self.n:  # vectors are V: U = Xc V / S
            return (self.centered @ vectors).div_(s), s, vectors.T
        return vectors, s, (vectors.T @ self.centered).div_(s[:, None])  # vectors are U: Vh = U^T Xc / S

    def rank(self, rtol: float | None = None) -> int:
        return int(self.svd(rtol)[1].numel())

    @property
    def sq_norm(self) -> float:
        """``||Xc||_F^2``."""
        return self.cached("sq_norm", lambda: float(torch.linalg.vector_norm(self.centered)) ** 2)

    @property
    def row_sq_norms(self) -> torch.Tensor:
        """``(n,)`` squared Euclidean norm of each centred datapoint (the diagonal of the linear Gram)."""
        return self.cached("row_sq_norms", lambda: torch.linalg.vector_norm(self.centered, dim=1).square_())

    @property
    def covariance(self) -> torch.Tensor:
        """``Xc^T Xc``, ``(d, d)`` (unnormalised; from the uncentred data when the module docstring allows)."""
        return self.cached("covariance", lambda: _centred_product(self, self))

    @property
    def gram(self) -> torch.Tensor:
        """Linear Gram ``Xc Xc^T``, ``(n, n)``; already centred because ``Xc`` is."""
        return self.cached("gram", lambda: matmul(self.centered, self.centered.T))

    @property
    def linear_self_inner(self) -> float:
        """``||Xc^T Xc||_F^2 = ||Xc Xc^T||_F^2`` from the smaller of covariance and Gram."""
        def compute():
            small = self.covariance if self.d <= self.n else self.gram
            return float((small * small).sum())
        return self.cached("linear_self_inner", compute)

    def sq_distances(self) -> torch.Tensor:
        """``(n, n)`` squared Euclidean distances between datapoints (from the centred data, clamped >= 0).

        Not cached: only the RBF kernel needs it, and an ``(n, n)`` float64 matrix is large.
        """
        gram = self._cache.get("gram")
        if gram is None:
            gram = matmul(self.centered, self.centered.T)
        norms = self.row_sq_norms
        dist = gram.mul(-2.0).add_(norms[:, None]).add_(norms[None, :])
        dist.clamp_(min=0.0)
        dist.fill_diagonal_(0.0)
        return dist

    @staticmethod
    def _median_offdiagonal_distance(sq_dist: torch.Tensor) -> float:
        """Median Euclidean distance over distinct pairs (i < j), averaging the two middle values like numpy."""
        n = sq_dist.shape[0]
        upper = torch.ones(n, n, dtype=torch.bool, device=sq_dist.device).triu_(diagonal=1)
        pairs = sq_dist[upper].sqrt_()
        middle = pairs.numel() // 2
        if pairs.numel() % 2:
            return float(torch.kthvalue(pairs, middle + 1).values)
        lower = torch.kthvalue(pairs, middle).values
        above = pairs[pairs > lower]
        # the next order statistic: ``lower`` again when it is tied, else the smallest larger value
        upper = lower if int((pairs <= lower).sum()) > middle or above.numel() == 0 else above.min()
        return float(0.5 * (lower + upper))

    def median_distance(self) -> float:
        """Median Euclidean distance over distinct pairs of datapoints (i < j)."""
        return self.cached("median_distance", lambda: self._median_offdiagonal_distance(self.sq_distances()))

    def bandwidth_sq_reference(self, bandwidth: str = "median_distinct_pairs", sq_dist: torch.Tensor | None = None) -> float:
        """The squared distance that ``sigma_fraction**2`` multiplies to give the RBF ``sigma**2``.

        * ``"median_distinct_pairs"``: (median Euclidean distance over the ``n (n - 1) / 2`` pairs ``i < j``)**2;
        * ``"median_all_entries"``: median of all ``n**2`` entries of the squared-distance matrix, the ``n``
          zeros of its diagonal included: the convention of Kornblith et al.'s demo notebook
          (``gram_rbf(x, threshold)``: ``exp(-D / (2 threshold**2 median(D)))``). The zeros pull the median
          down, more for small ``n``.
        """
        if bandwidth == "median_distinct_pairs":
            if sq_dist is None and "median_distance" not in self._cache:
                sq_dist = self.sq_distances()
            return self.cached("median_distance", lambda: self._median_offdiagonal_distance(sq_dist)) ** 2
        if bandwidth == "median_all_entries":
            def compute():
                matrix = self.sq_distances() if sq_dist is None else sq_dist
                return float(np.median(matrix.cpu().numpy()))
            return self.cached("median_sq_distance_all_entries", compute)
        raise InputError(f"unknown RBF bandwidth {bandwidth!r}; choose one of {BANDWIDTHS}")

    def kernel_gram(self, kernel: str, sigma_fraction: float = 0.8,
                    bandwidth: str = "median_distinct_pairs") -> torch.Tensor:
        """Uncentred kernel matrix ``(n, n)``: ``linear`` (``Xc Xc^T``, cached) or ``rbf``
        ``exp(-||xi - xj||^2 / (2 sigma^2))`` with ``sigma**2 = sigma_fraction**2 *``
        :meth:`bandwidth_sq_reference` (``bandwidth``: ``"median_distinct_pairs"``, sigma a fraction of the
        median distance between distinct datapoints, or ``"median_all_entries"``, the notebook's). Not cached:
        only its centred form is kept."""
        if kernel == "linear":
            return self.gram
        if kernel != "rbf":
            raise InputError(f"unknown kernel {kernel!r}; choose 'linear' or 'rbf'")
        if not sigma_fraction > 0:
            raise InputError(f"sigma_fraction must be > 0, got {sigma_fraction}")
        if bandwidth not in BANDWIDTHS:
            raise InputError(f"unknown RBF bandwidth {bandwidth!r}; choose one of {BANDWIDTHS}")
        sq_dist = self.sq_distances()
        sigma_sq = sigma_fraction ** 2 * self.bandwidth_sq_reference(bandwidth, sq_dist)
        if sigma_sq == 0.0:
            raise InputError(f"{self.name}: the median distance between datapoints is 0 (more than half "
                             f"of the {'pairs' if bandwidth == 'median_distinct_pairs' else 'entries'} are "
                             f"zero distances); the RBF bandwidth heuristic is undefined")
        return sq_dist.mul_(-1.0 / (2.0 * sigma_sq)).exp_()

    def centered_gram(self, kernel: str, sigma_fraction: float = 0.8, unbiased: bool = False,
                      bandwidth: str = "median_distinct_pairs") -> torch.Tensor:
        """Kernel matrix centred as ``H K H`` (biased HSIC), or U-centred (Szekely & Rizzo 2014) so that
        ``<K~, L~> / (n (n - 3))`` is the unbiased HSIC estimator of Song et al. (2012)."""
        key = ("centered_gram", kernel, (float(sigma_fraction), bandwidth) if kernel == "rbf" else None, unbiased)

        def compute():
            gram = self.kernel_gram(kernel, sigma_fraction, bandwidth)
            if kernel == "linear" and not unbiased:
                return gram
            # the RBF kernel matrix is a fresh temporary: centre it in place
            return center_gram(gram, unbiased, inplace=kernel == "rbf")
        return self.cached(key, compute)

    def permuted(self, index: torch.Tensor) -> "Representation":
        """The same representation with datapoints reordered by ``index`` (a permutation), caches carried over.

        Centring commutes with a permutation, so the SVD (rows of ``U``) and Gram matrices (rows and columns)
        are permuted instead of recomputed: permutation tests cost one pair evaluation per permutation.
        """
        index = index.to(self.device)
        rep = Representation._from_centered(self.centered[index], self.name, self.eps, self.scale_exponent)
        for key, value in self._cache.items():
            if key in ("svd_eigh", "svd_exact"):
                rep._cache[key] = (value[0][index], value[1], value[2])
            elif key in ("sq_norm", "linear_self_inner", "median_distance", "median_sq_distance_all_entries",
                         "covariance", "covariance_eigenvalues", "covariance_cholesky",
                         "covariance_cholesky_inverse", "covariance_frobenius_norm",
                         "self_unbiased_hsic_feature") or (isinstance(key, tuple) and key[0] == "self_gram_inner"):
                rep._cache[key] = value
            elif key in ("row_sq_norms", "compact"):
                rep._cache[key] = value[index]
            elif key == "gram" or (isinstance(key, tuple) and key[0] == "centered_gram"):
                rep._cache[key] = value[index][:, index]  # an (n, n) matrix: permute rows and columns
        return rep

    def subset(self, index: torch.Tensor) -> "Representation":
        """A new representation of the datapoints ``index`` (with repeats allowed), re-centred from scratch."""
        data = self.centered[index.to(self.device)]
        centered = data - data.mean(dim=0, keepdim=True)
        if not bool(centered.abs().max() > 0):
            raise InputError(f"{self.name}: the resampled datapoints are all identical (constant); "
                             f"use more datapoints")
        return Representation._from_centered(centered, self.name, self.eps, self.scale_exponent)


def _centred_product(rx: Representation, ry: Representation) -> torch.Tensor:
    """``Xc^T Yc`` ``(d_x, d_y)``: ``A^T B - n m_A m_B^T`` from :meth:`Representation._product_operand` (a
    symmetric rank-k update when ``rx is ry``)."""
    a, mean_a = rx._product_operand()
    b, mean_b = (a, mean_a) if ry is rx else ry._product_operand()
    product = matmul(a.T, b)
    if mean_a is not None and mean_b is not None:
        product.sub_(torch.outer(mean_a, mean_b), alpha=rx.n)
    return product


def _magnitude_bound(sq_sums: torch.Tensor, n: int) -> float | None:
    """An upper bound on ``max |x|`` proving the data finite and without rescaling due, or None.

    ``sq_sums``: ``(d,)`` column sums of squares of the ``(n, d)`` data. A NaN or Inf value makes its column's
    sum NaN or Inf. Otherwise ``max_j ||X[:, j]||^2 / n <= max |x|^2 <= max_j ||X[:, j]||^2 = top``, so
    ``2**-63 <= sqrt(top / n)`` and ``sqrt(top) <= 2**63`` put ``max |x|`` inside ``[2**-SAFE_EXPONENT,
    2**SAFE_EXPONENT]`` with a factor 2 to spare for rounding (:func:`_rescaling_exponent` would return 0):
    then ``sqrt(top)`` is returned. None (finite values not proven, or near the edges of the range) sends the
    caller to the exact check.
    """
    top = float(sq_sums.max())
    limit = 2.0 * (SAFE_EXPONENT - 1)
    if not (math.isfinite(top) and bool(torch.isfinite(sq_sums).all())):
        return None
    if not (top <= 2.0 ** limit and top / n >= 2.0 ** -limit):
        return None
    return math.sqrt(top)


def _rescaling_exponent(largest: float) -> int:
    """0 when ``2**-SAFE_EXPONENT <= largest <= 2**SAFE_EXPONENT``, else ``k`` with ``largest * 2**k`` in [0.5, 1)."""
    if largest == 0.0 or 2.0 ** -SAFE_EXPONENT <= largest <= 2.0 ** SAFE_EXPONENT:
        return 0
    return -math.frexp(largest)[1]


def _times_power_of_two(data: torch.Tensor, exponent: int, inplace: bool) -> torch.Tensor:
    """``data * 2**exponent``, exact unless a value becomes subnormal; applied in two halves, since
    ``2**exponent`` itself is out of float64's range for ``|exponent| > 1023`` (subnormal input)."""
    half = exponent // 2
    data = data.mul_(2.0 ** half) if inplace else data * 2.0 ** half
    return data.mul_(2.0 ** (exponent - half))


def center_gram(gram: torch.Tensor, unbiased: bool = False, inplace: bool = False) -> torch.Tensor:
    """Centre a symmetric ``(n, n)`` kernel matrix: ``H K H`` or, with ``unbiased``, the U-centring

    ``K~_ij = K_ij - r_i/(n-2) - r_j/(n-2) + s/((n-1)(n-2))`` for ``i != j`` and 0 on the diagonal, where
    ``r`` are row sums and ``s`` the total sum of ``K`` with its diagonal zeroed (needs n >= 4).
    """
    n = gram.shape[0]
    if unbiased and n < 4:
        raise InputError(f"the unbiased HSIC estimator needs at least 4 datapoints, got {n}")
    result = gram if inplace else gram.clone()
    if not unbiased:
        row_means = result.mean(dim=0)
        total_mean = row_means.mean()
        return result.sub_(row_means[:, None]).sub_(row_means[None, :]).add_(total_mean)
    result.fill_diagonal_(0.0)
    row_sums = result.sum(dim=0)
    total = row_sums.sum()
    result.sub_(row_sums[:, None] / (n - 2)).sub_(row_sums[None, :] / (n - 2)).add_(total / ((n - 1) * (n - 2)))
    result.fill_diagonal_(0.0)
    return result


def as_representation(array, name: str, min_datapoints: int = 2) -> Representation:
    """``array`` wrapped as a :class:`Representation` (returned unchanged if it already is one)."""
    if isinstance(array, Representation):
        if array.n < min_datapoints:
            raise InputError(f"{array.name} has {array.n} datapoints; at least {min_datapoints} are needed")
        return array
    return Representation(array, name=name, min_datapoints=min_datapoints)


def check_pair(rx: Representation, ry: Representation) -> None:
    """Two representations of the same datapoints on the same device."""
    check_same_datapoints(rx.n, ry.n, rx.name, ry.name)
    if rx.device != ry.device:
        raise InputError(f"{rx.name} is on {rx.device} but {ry.name} on {ry.device}; move both to one device")
