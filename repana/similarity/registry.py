"""One registry of similarity measures, so analyses and the CLI take a measure by name.

A registered measure is a function ``(rx: Representation, ry: Representation, **options) -> float`` of two
prepared representations (see :mod:`repana.similarity.representation`): layer x layer comparisons then
reuse each layer's centring, SVD and Gram matrices across pairs and measures.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

from repana.errors import InputError
from repana.similarity.cca import cca_from_representations, pwcca_from_representations, svcca_from_representations
from repana.similarity.cka import cka_from_representations
from repana.similarity.datapoints import degenerate_reason, warn_if_degenerate
from repana.similarity.procrustes import procrustes_similarity_from_representations
from repana.similarity.representation import Representation, as_representation

PairFunction = Callable[..., float]


@dataclass(frozen=True)
class Measure:
    """A named measure: ``function(rx, ry, **options)``, its default options and its properties."""

    name: str
    function: PairFunction
    description: str
    symmetric: bool = True
    min_datapoints: int = 2
    defaults: dict = field(default_factory=dict)
    #: True when the value nears 1 for unrelated data once a side is saturated (its centred rank reaches its
    #: distinct datapoints - 1): comparisons then flag it (:mod:`repana.similarity.datapoints`).
    saturates: bool = False
    #: The option names ``function`` takes; None: not known (it takes ``**options``), so none are checked.
    options: tuple[str, ...] | None = None

    def __call__(self, rx: Representation, ry: Representation, **options) -> float:
        self.check_options(options)
        return float(self.function(rx, ry, **{**self.defaults, **options}))

    def check_options(self, options: dict) -> None:
        """InputError naming the options this measure does not take."""
        known = self.options
        unknown = [] if known is None else sorted(set(options) - set(known))
        if unknown:
            takes = ", ".join(known) if known else "no options"
            raise InputError(f"measure {self.name!r} has no option {', '.join(map(repr, unknown))}; it takes "
                             f"{takes}")

    def degenerate_reason(self, rx: Representation, ry: Representation) -> str | None:
        """Why this measure is near 1 by construction on ``rx``, ``ry`` (None when it is not, or when the
        measure does not saturate): :func:`repana.similarity.datapoints.degenerate_reason`."""
        return degenerate_reason(rx, ry) if self.saturates else None


_REGISTRY: dict[str, Measure] = {}


def register_measure(name: str, function: PairFunction, *, description: str, symmetric: bool = True,
                     min_datapoints: int = 2, defaults: dict | None = None, overwrite: bool = False,
                     saturates: bool = False) -> Measure:
    """Register ``function(rx, ry, **options) -> float`` under ``name``.

    ``saturates``: the value nears 1 for unrelated data when a side's centred rank reaches its distinct
    datapoints - 1 (plain CKA, Procrustes); comparisons then flag the value degenerate. The options a caller
    may pass are the keyword parameters of ``function`` after the two representations (all, when it takes
    ``**options``).

    ``rx.centered`` / ``ry.centered`` are the centred float64 activations ``(n, d)``; ``rx.svd()``,
    ``rx.gram``, ``rx.covariance`` are cached per layer.
    """
    if name in _REGISTRY and not overwrite:
        raise InputError(f"measure {name!r} is already registered (pass overwrite=True to replace it)")
    measure = Measure(name, function, description, symmetric, min_datapoints, dict(defaults or {}), saturates,
                      _option_names(function))
    _REGISTRY[name] = measure
    return measure


def _option_names(function: PairFunction) -> tuple[str, ...] | None:
    """Keyword parameters of ``function`` after its two representations; None when it takes ``**kwargs``."""
    try:
        parameters = list(inspect.signature(function).parameters.values())[2:]
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return tuple(p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                           inspect.Parameter.KEYWORD_ONLY))


def get_measure(name: str) -> Measure:
    """The :class:`Measure` called ``name``; an unknown name lists the registered ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown similarity measure {name!r}; registered: {', '.join(list_measures())}") from None


def list_measures() -> list[str]:
    """Names of the registered measures, in registration order."""
    return list(_REGISTRY)


def similarity(name: str, X, Y, **options) -> float:
    """The measure ``name`` between ``X (n, d_x)`` and ``Y (n, d_y)``: ``similarity("svcca", X, Y, keep=20)``."""
    measure = get_measure(name)
    measure.check_options(options)
    rx = as_representation(X, "X", measure.min_datapoints)
    ry = as_representation(Y, "Y", measure.min_datapoints)
    value = measure(rx, ry, **options)
    if measure.saturates:
        warn_if_degenerate(name, rx, ry)
    return value


def _cca_mean(rx: Representation, ry: Representation, rtol: float | None = None) -> float:
    return cca_from_representations(rx, ry, rtol=rtol).mean


def _cca_mean_squared(rx: Representation, ry: Representation, rtol: float | None = None) -> float:
    return cca_from_representations(rx, ry, rtol=rtol).mean_squared


register_measure("cca", _cca_mean,
                 description="mean canonical correlation (null directions dropped)")
register_measure("cca_r2", _cca_mean_squared,
                 description="mean squared canonical correlation, R^2_CCA (Kornblith et al. 2019)")
register_measure("svcca", svcca_from_representations, defaults={"keep": 0.99},
                 description="SVCCA (Raghu et al. 2017): CCA of the directions keeping 99% of the variance")
register_measure("pwcca", pwcca_from_representations, symmetric=False, defaults={"weights_from": "x"},
                 description="projection-weighted CCA (Morcos et al. 2018), weights from the first input")
register_measure("cka", cka_from_representations, saturates=True, defaults={"kernel": "linear", "debiased": False},
                 description="linear CKA (Kornblith et al. 2019)")
register_measure("cka_debiased", cka_from_representations, min_datapoints=4,
                 defaults={"kernel": "linear", "debiased": True},
                 description="linear CKA with the unbiased HSIC estimator (Song et al. 2012)")
register_measure("cka_rbf", cka_from_representations, saturates=True, defaults={"kernel": "rbf", "debiased": False,
                                                                "sigma_fraction": 0.8,
                                                                "bandwidth": "median_distinct_pairs"},
                 description="RBF-kernel CKA, sigma = 0.8 x median distance between distinct datapoints "
                             "(Kornblith et al. 2019); bandwidth='median_all_entries' for their notebook's")
register_measure("procrustes", procrustes_similarity_from_representations, saturates=True,
                 description="orthogonal Procrustes similarity ||X^T Y||_* (Ding et al. 2021); distance = 2 - 2 sim")
