"""Canonical correlation analysis and its descendants: CCA, SVCCA (Raghu et al. 2017), PWCCA (Morcos et al. 2018).

The canonical correlations are the cosines of the principal angles between the column spaces of the centred
representations: the singular values of ``Qx^T Qy`` for any orthonormal bases ``Qx``, ``Qy``. Two exact routes:

* Cholesky route (``cca``, ``pwcca``, used whenever both representations have full column rank and condition
  number at most ``1 / CHOLESKY_MIN_SINGULAR_RATIO = 1e3``): ``Qx = Xc Lx^-T`` with ``Lx Lx^T = Xc^T Xc``, so
  ``Qx^T Qy = Lx^-1 (Xc^T Yc) Ly^-T``. Its cost is the three products of the data, ``X^T X`` and ``Y^T Y`` as
  symmetric rank-k updates and ``X^T Y``: ``2 n d^2`` multiply-adds for ``d_x = d_y = d``, about 85% of the
  time at (20000, 512) on one thread, the same count as ``np.cov`` of the stacked activations (one symmetric
  update of the stacked ``[X Y]`` does the same work and measured within 1% of the three calls, but needs an
  ``n x 2d`` copy). They are formed
  from the uncentred float64 data (``X^T X - n m m^T``, the caller's float64 array read in place, no centred
  copy) when no feature's mean exceeds ``sqrt(3)`` standard deviations
  (:data:`repana.similarity.representation.RAW_MOMENTS_MAX_OFFSET`), else from centred copies. The rest is
  ``O(d^3)``: two Cholesky factorisations, two triangular inverses (which also prove the conditioning rule
  without an eigenvalue solver whenever it holds with a margin of ``d**1.5``; see :func:`_well_conditioned`),
  two small products and one ``d x d`` SVD (singular values only for ``cca``). PWCCA's loadings
  ``H^T Xc = U^T Lx^T`` need no ``n x d`` work either. Validation costs two reads of each input (column sums
  and sums of squares, which also catch NaN / Inf). At that conditioning the canonical correlations agree
  with the SVD route to ~1e-12 (checked in the tests to 1e-10).
* SVD route (everything else, and SVCCA, which needs the singular directions): the thin SVD of each centred
  representation ``Xc = Ux Sx Vx^T`` and the singular values of ``Ux^T Uy``. Null directions -- singular values
  at or below ``rtol * S.max()``, ``rtol = max(n, d) * eps`` of the input dtype by default
  (numpy.linalg.matrix_rank's rule; half precision: see :meth:`repana.similarity.Representation.rank_rtol`) -- are dropped, so a
  64-unit layer of rank 16 has 16 canonical directions, not 64 with 48 meaningless near-zero coefficients. (For
  float32 activations the SVD is taken from the float64 eigendecomposition of the covariance or Gram matrix,
  exact to far below that tolerance; see :meth:`repana.similarity.Representation.svd`.)

Inputs: numpy arrays or torch tensors of any float dtype or integers, nested lists, pandas DataFrames; cast
to float64 before any check (see :func:`repana.similarity.cka` for the accepted types and magnitudes).

Sample size rule (an error, not a warning): two subspaces of dimensions ``k_x`` and ``k_y`` in the
``(n - 1)``-dimensional space of centred datapoints share at least ``k_x + k_y - (n - 1)`` directions, so
whenever ``k_x + k_y >= n`` at least one canonical correlation is exactly 1 by construction. ``n`` counts
distinct datapoints (:func:`repana.similarity.datapoints.distinct_datapoints`): 5 rows repeated 20 times
are 5 datapoints. Every
CCA-family measure raises :class:`~repana.errors.InputError` then, naming the numbers and the fixes.
Even below that limit CCA is biased upwards when ``n`` is not much larger than ``k_x + k_y``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from repana.errors import InputError
from repana.similarity.datapoints import distinct_datapoints
from repana.similarity.representation import Representation, as_representation, check_pair

WEIGHTS_FROM = ("x", "y")

#: The Cholesky route is taken when every singular value of both centred representations is above this
#: fraction of the largest (and above the rank tolerance): the Gram matrix's rounding (relative ~1e-16, at most
#: ~2.4x that when formed from raw moments) then moves the whitened cross-covariance by at most
#: ~1e-16 / 1e-6 = 1e-10, far below the 1e-8 agreement asked of the two routes.
CHOLESKY_MIN_SINGULAR_RATIO = 1e-3


@dataclass(frozen=True)
class CCAResult:
    """Canonical correlations of two representations.

    Attributes:
        coefficients: ``(k,)`` float64 numpy array, sorted descending, in [0, 1];
            ``k = min(rank X, rank Y)`` after null directions are dropped.
        n_datapoints: number of datapoints used.
        n_directions_x, n_directions_y: directions kept in each representation.
    """

    coefficients: np.ndarray
    n_datapoints: int
    n_directions_x: int
    n_directions_y: int

    @property
    def mean(self) -> float:
        """Mean canonical correlation (the SVCCA summary of Raghu et al. 2017)."""
        return float(self.coefficients.mean())

    @property
    def mean_squared(self) -> float:
        """Mean squared canonical correlation, R^2_CCA of Kornblith et al. (2019)."""
        return float((self.coefficients ** 2).mean())


def cca(X, Y, rtol: float | None = None) -> CCAResult:
    """Canonical correlations between ``X (n, d_x)`` and ``Y (n, d_y)``.

    ``X``, ``Y``: numpy / torch of any float dtype or integers, nested lists, DataFrames (cast to float64 first).

    Args:
        rtol: relative singular-value tolerance for dropping null directions (default
            :meth:`repana.similarity.Representation.rank_rtol`: ``max(n, d) * eps`` of the input dtype for
            float64 / float32; for float16 / bfloat16 float32's rule but at least ``2 * eps``).

    Raises:
        InputError: when the kept directions ``k_x + k_y >= n`` (some coefficient is 1 by construction).
    """
    return cca_from_representations(as_representation(X, "X"), as_representation(Y, "Y"), rtol=rtol)


def svcca(X, Y, keep: float | int = 0.99, rtol: float | None = None) -> float:
    """SVCCA: mean CCA of the top singular directions of each centred representation.

    Args:
        keep: a float in (0, 1]: keep the fewest directions explaining this fraction of the variance
            (Raghu et al. 2017 keep 0.99); an int: keep this many directions (capped at the numerical rank;
            the reference tutorial's habit, e.g. 20 or 50).
    """
    return svcca_from_representations(as_representation(X, "X"), as_representation(Y, "Y"), keep=keep, rtol=rtol)


def pwcca(X, Y, weights_from: str = "x", rtol: float | None = None) -> float:
    """Projection-weighted CCA (Morcos et al. 2018): canonical correlations averaged with weights.

    The weight of canonical direction ``i`` is ``sum_j |<h_i, z_j>|``, normalised to sum to 1, with ``h_i`` the
    unit-norm canonical variate and ``z_j`` the centred activations of unit ``j`` of the representation named
    by ``weights_from`` (``"x"`` or ``"y"``). The measure is not symmetric and the choice changes the value;
    the reference implementation (google/svcca ``compute_pwcca``) weights by whichever input has fewer units.
    """
    return pwcca_from_representations(as_representation(X, "X"), as_representation(Y, "Y"),
                                      weights_from=weights_from, rtol=rtol)


# --- the same measures on prepared representations -------------------------------------------------------

def cca_from_representations(rx: Representation, ry: Representation, rtol: float | None = None) -> CCAResult:
    whitened = _whitened_cross(rx, ry, rtol, "cca")
    if whitened is not None:
        coefficients = torch.linalg.svdvals(whitened).clamp(0.0, 1.0)
        return CCAResult(coefficients.cpu().numpy(), rx.n, rx.d, ry.d)
    kx, ky = rx.rank(rtol), ry.rank(rtol)
    coefficients = _canonical_correlations(rx, ry, kx, ky, rtol, "cca")
    return CCAResult(coefficients.cpu().numpy(), rx.n, kx, ky)


def svcca_from_representations(rx: Representation, ry: Representation, keep: float | int = 0.99,
                               rtol: float | None = None) -> float:
    kx = _n_top_directions(rx, keep, rtol)
    ky = _n_top_directions(ry, keep, rtol)
    return float(_canonical_correlations(rx, ry, kx, ky, rtol, f"svcca(keep={keep})").mean())


def pwcca_from_representations(rx: Representation, ry: Representation, weights_from: str = "x",
                               rtol: float | None = None) -> float:
    if weights_from not in WEIGHTS_FROM:
        raise InputError(f"weights_from must be 'x' or 'y' (whose canonical variates give the weights), "
                         f"got {weights_from!r}")
    whitened = _whitened_cross(rx, ry, rtol, "pwcca")
    if whitened is not None:
        left, rho, right_h = torch.linalg.svd(whitened, full_matrices=False)
        rho = rho.clamp(0.0, 1.0)
        # Canonical variates H = Xc Lx^-T U, so H^T Xc = U^T Lx^-1 Xc^T Xc = U^T Lx^T (and V^T Ly^T for Y).
        if weights_from == "x":
            loadings = left.T @ _cholesky_factor(rx).T
        else:
            loadings = right_h @ _cholesky_factor(ry).T
        weights = loadings.abs().sum(dim=1)
        return float((weights * rho).sum() / weights.sum())
    check_pair(rx, ry)
    _, sx, vhx = rx.svd(rtol)
    _, sy, vhy = ry.svd(rtol)
    _check_sample_size(rx.n, sx.numel(), sy.numel(), rx, ry, "pwcca")
    left, rho, right_h = torch.linalg.svd(rx.basis_cross(ry, rtol), full_matrices=False)
    rho = rho.clamp(0.0, 1.0)
    # Canonical variates of X are H = Ux P (orthonormal), and H^T Xc = P^T diag(Sx) Vx^T.
    if weights_from == "x":
        loadings = left.T @ (sx[:, None] * vhx)
    else:
        loadings = right_h @ (sy[:, None] * vhy)
    weights = loadings.abs().sum(dim=1)
    return float((weights * rho).sum() / weights.sum())


def _n_top_directions(rep: Representation, keep: float | int, rtol: float | None) -> int:
    """How many of the top singular directions ``keep`` chooses."""
    _, s, _ = rep.svd(rtol)
    if isinstance(keep, bool) or not isinstance(keep, (int, float, np.integer, np.floating)):
        raise InputError(f"keep must be a float in (0, 1] (variance fraction) or an int >= 1 (directions), "
                         f"got {keep!r}")
    if isinstance(keep, (int, np.integer)):
        if keep < 1 or keep > rep.d:
            raise InputError(f"keep={keep} directions, but {rep.name} has {rep.d} features; choose 1..{rep.d}")
        k = min(int(keep), s.numel())
    else:
        if not 0.0 < keep <= 1.0:
            raise InputError(f"keep={keep} as a variance fraction must lie in (0, 1]")
        variance = s * s
        fraction = torch.cumsum(variance, 0) / variance.sum()
        k = int((fraction < keep - 1e-12).sum()) + 1
        k = min(k, s.numel())
    return k


def _check_sample_size(n: int, kx: int, ky: int, rx: Representation, ry: Representation, measure: str) -> None:
    if kx == 0 or ky == 0:
        raise InputError(f"{measure}: {rx.name if kx == 0 else ry.name} has no direction above the rank "
                         f"tolerance (numerically constant)")
    distinct = n if kx + ky >= n else distinct_datapoints(rx, ry, stop_at=kx + ky + 1)
    if kx + ky >= distinct:
        counted = f"{n} datapoints" if distinct == n else f"{n} datapoints but only {distinct} distinct ones"
        raise InputError(
            f"{measure}: {counted} and {kx} + {ky} = {kx + ky} directions kept in {rx.name} "
            f"({rx.d} features) and {ry.name} ({ry.d} features); with distinct datapoints <= k_x + k_y at least "
            f"one canonical correlation is 1 by construction. Needs more than {kx + ky} distinct datapoints: use "
            f"svcca with fewer directions (keep=<int>), reduce_conv(acts, 'positions') or 'mean' for conv maps, "
            f"or more datapoints")


def _canonical_correlations(rx: Representation, ry: Representation, kx: int, ky: int, rtol: float | None,
                            measure: str) -> torch.Tensor:
    """Singular values of ``Ux[:, :kx]^T Uy[:, :ky]`` (a block of the pair's cached basis product when possible)."""
    check_pair(rx, ry)
    _check_sample_size(rx.n, kx, ky, rx, ry, measure)
    return torch.linalg.svdvals(rx.top_basis_cross(ry, kx, ky, rtol)).clamp(0.0, 1.0)


def _well_conditioned(rep: Representation, rtol: float | None) -> bool:
    """Full column rank with every singular value above ``max(CHOLESKY_MIN_SINGULAR_RATIO, rank rtol) * S.max()``,
    i.e. ``lambda_min > ratio**2 * lambda_max`` for the eigenvalues of ``C = Xc^T Xc`` (the squared singular
    values), and ``C`` positive definite to LAPACK's Cholesky.

    Decided exactly, cheaply when the margin is wide: ``lambda_max <= ||C||_F`` and ``lambda_min >=
    1 / ||L^-1||_F**2 = 1 / trace(C^-1)`` (``L`` the Cholesky factor), so ``1 / ||L^-1||_F**2 > ratio**2 ||C||_F``
    proves the rule with one ``d x d`` triangular inverse (a triangular solve against the identity, about
    ``d^3 / 2`` multiply-adds: 25 us against 95 us for ``eigvalsh`` at d = 64, 6 ms against 13 ms at d = 512, one
    thread), which the whitening then reuses. Otherwise -- a condition number within a factor ``d**1.5`` of the
    limit -- the eigenvalues of ``C`` decide, as the rule states. Cached per representation.
    """
    if rep.d >= rep.n:  # centring leaves rank <= n - 1 < d
        return False
    factor = _cholesky_factor(rep)
    if factor is None:
        return False
    ratio_sq = max(CHOLESKY_MIN_SINGULAR_RATIO, rep.rank_rtol(rtol)) ** 2
    inverse_sq_norm = float(torch.linalg.matrix_norm(_inverse_cholesky_factor(rep))) ** 2
    covariance_norm = rep.cached("covariance_frobenius_norm", lambda: float(torch.linalg.matrix_norm(rep.covariance)))
    if inverse_sq_norm * ratio_sq * covariance_norm < 1.0:
        return True
    eigenvalues = rep.cached("covariance_eigenvalues", lambda: torch.linalg.eigvalsh(rep.covariance))
    return bool(eigenvalues[0] > ratio_sq * eigenvalues[-1])


def _cholesky_factor(rep: Representation) -> torch.Tensor | None:
    """Lower-triangular ``L`` with ``L L^T = Xc^T Xc`` (cached); None if LAPACK finds the matrix not positive
    definite (singular or rank deficient to rounding: the SVD route then)."""
    def compute():
        factor, info = torch.linalg.cholesky_ex(rep.covariance)
        return factor if int(info) == 0 else None
    return rep.cached("covariance_cholesky", compute)


def _inverse_cholesky_factor(rep: Representation) -> torch.Tensor:
    """``L^-1`` (lower triangular, cached) of a positive definite ``Xc^T Xc = L L^T``; relative error about
    ``cond(L) * eps`` (``< 1e-12`` on the Cholesky route, where ``cond(L) <= 1e3``)."""
    def compute():
        factor = _cholesky_factor(rep)
        identity = torch.eye(rep.d, dtype=factor.dtype, device=factor.device)
        return torch.linalg.solve_triangular(factor, identity, upper=False)
    return rep.cached("covariance_cholesky_inverse", compute)


def _whitened_cross(rx: Representation, ry: Representation, rtol: float | None, measure: str):
    """``Lx^-1 (Xc^T Yc) Ly^-T`` (``(d_x, d_y)``, its singular values are the canonical correlations) when both
    representations are well conditioned (:func:`_well_conditioned`), else None (use the SVD route)."""
    check_pair(rx, ry)
    if not (_well_conditioned(rx, rtol) and _well_conditioned(ry, rtol)):
        return None
    _check_sample_size(rx.n, rx.d, ry.d, rx, ry, measure)
    return _inverse_cholesky_factor(rx) @ rx.cross(ry) @ _inverse_cholesky_factor(ry).T
