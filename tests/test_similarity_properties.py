"""Hypothesis property tests: the invariances each measure promises, on random shapes and transforms."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repana.similarity import similarity

pytestmark = pytest.mark.filterwarnings("ignore::repana.similarity.RepanaWarning")

SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def problems(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    n = draw(st.integers(40, 120))
    dx = draw(st.integers(1, 8))
    dy = draw(st.integers(1, 8))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dx)) * rng.uniform(0.2, 3.0, size=dx)
    y = np.tanh(x @ rng.normal(size=(dx, dy))) + rng.uniform(0.1, 1.0) * rng.normal(size=(n, dy))
    return x, y, rng


def random_orthogonal(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def well_conditioned_map(rng, d):
    return random_orthogonal(rng, d) @ np.diag(rng.uniform(0.3, 3.0, size=d)) @ random_orthogonal(rng, d)


ORTHOGONAL_INVARIANT = ["cka", "cka_debiased", "cka_rbf", "procrustes", "cca", "svcca"]
LINEAR_INVARIANT = ["cca", "cca_r2"]


@SETTINGS
@given(problems(), st.floats(0.01, 100.0), st.floats(-1000.0, 1000.0))
def test_orthogonal_scaling_translation_invariance(problem, scale, shift):
    x, y, rng = problem
    transformed = scale * x @ random_orthogonal(rng, x.shape[1]) + shift
    for measure in ORTHOGONAL_INVARIANT:
        kwargs = {"keep": 1.0} if measure == "svcca" else {}
        assert similarity(measure, transformed, y, **kwargs) == pytest.approx(
            similarity(measure, x, y, **kwargs), rel=1e-7, abs=1e-9), measure


@SETTINGS
@given(problems())
def test_cca_invariant_to_invertible_linear_maps(problem):
    x, y, rng = problem
    mapped_x = x @ well_conditioned_map(rng, x.shape[1]) - 5.0
    mapped_y = y @ well_conditioned_map(rng, y.shape[1])
    for measure in LINEAR_INVARIANT + ["svcca"]:
        kwargs = {"keep": 1.0} if measure == "svcca" else {}
        assert similarity(measure, mapped_x, mapped_y, **kwargs) == pytest.approx(
            similarity(measure, x, y, **kwargs), rel=1e-7, abs=1e-9), measure


@SETTINGS
@given(problems())
def test_symmetry_and_range(problem):
    x, y, _ = problem
    for measure in ["cca", "cca_r2", "svcca", "cka", "cka_rbf", "procrustes", "cka_debiased"]:
        forward, backward = similarity(measure, x, y), similarity(measure, y, x)
        assert forward == pytest.approx(backward, rel=1e-9, abs=1e-12), measure
        assert forward <= 1.0 + 1e-12
        if measure != "cka_debiased":
            assert forward >= -1e-12
