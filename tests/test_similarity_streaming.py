"""Streaming exact linear CKA and the minibatch CKA estimator of Nguyen et al. (2021), many layers at once."""

import numpy as np
import pytest
import torch

from repana.errors import InputError
from repana.similarity import MinibatchCKA, StreamingLinearCKA, cka

pytestmark = pytest.mark.filterwarnings("ignore::repana.similarity.RepanaWarning")


def make_layers(rng, n):
    z = rng.normal(size=(n, 6))
    return {
        "l1": z @ rng.normal(size=(6, 10)) + 0.5 * rng.normal(size=(n, 10)),
        "l2": np.tanh(z @ rng.normal(size=(6, 14))) + 0.5 * rng.normal(size=(n, 14)),
    }, {
        "m1": np.maximum(z @ rng.normal(size=(6, 8)), 0.0) + 0.3 * rng.normal(size=(n, 8)),
        "m2": rng.normal(size=(n, 5)),
    }


def test_streaming_equals_full_data_plain_cka(rng):
    acts_a, acts_b = make_layers(rng, 1000)
    acts_a["l1"] = (acts_a["l1"] + 180.0 * acts_a["l1"].std()).astype(np.float32)  # a large mean offset
    acc = StreamingLinearCKA()
    for start in range(0, 1000, 128):  # uneven last batch on purpose
        acc.update({k: torch.from_numpy(v[start:start + 128]) for k, v in acts_a.items()},
                   {k: v[start:start + 128] for k, v in acts_b.items()})
    assert acc.n_datapoints == 1000
    frame = acc.to_frame()
    assert len(frame) == 4 and set(frame["measure"]) == {"cka"}
    for (a, b), value in acc.results().items():
        assert value == pytest.approx(cka(acts_a[a], acts_b[b]), abs=1e-9)


def test_streaming_single_model_compares_its_layers(rng):
    acts_a, _ = make_layers(rng, 300)
    acc = StreamingLinearCKA()
    for start in range(0, 300, 100):
        acc.update({k: v[start:start + 100] for k, v in acts_a.items()})
    assert acc.value("l1", "l1") == pytest.approx(1.0)
    assert acc.value("l1", "l2") == pytest.approx(cka(acts_a["l1"], acts_a["l2"]), abs=1e-10)
    assert acc.value("l2", "l1") == pytest.approx(acc.value("l1", "l2"), abs=1e-12)


def test_minibatch_cka_converges_to_full_data_debiased(rng):
    # The estimator averages unbiased HSIC over minibatches; as the batches grow it approaches the
    # full-data debiased CKA, and with one batch of all the data it is exactly that.
    acts_a, acts_b = make_layers(rng, 4096)
    errors = []
    for batch_size in (64, 512, 4096):
        acc = MinibatchCKA()
        for start in range(0, 4096, batch_size):
            batch = slice(start, start + batch_size)
            acc.update({k: v[batch] for k, v in acts_a.items()}, {k: v[batch] for k, v in acts_b.items()})
        errors.append(max(abs(acc.value(a, b) - cka(acts_a[a], acts_b[b], debiased=True))
                          for a in acts_a for b in acts_b))
    assert 0.3 < cka(acts_a["l1"], acts_b["m1"], debiased=True) < 0.95
    assert errors[0] < 0.02
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-12


def test_minibatch_is_not_plain_cka_on_small_batches(rng):
    # Independent wide layers: plain CKA per batch would be inflated; the minibatch estimator stays near 0.
    x, y = rng.normal(size=(2000, 300)), rng.normal(size=(2000, 300))
    acc = MinibatchCKA()
    for i in range(0, 2000, 100):
        acc.update({"x": x[i:i + 100]}, {"y": y[i:i + 100]})
    assert abs(acc.value("x", "y")) < 0.03
    assert cka(x[:100], y[:100]) > 0.6


def test_accumulator_errors(rng):
    acc = StreamingLinearCKA()
    with pytest.raises(InputError, match="no data yet"):
        acc.results()
    acc.update({"a": rng.normal(size=(10, 3))})
    with pytest.raises(InputError, match="same layers"):
        acc.update({"b": rng.normal(size=(10, 3))})
    with pytest.raises(InputError, match="reduction"):
        StreamingLinearCKA().update({"conv": rng.normal(size=(10, 2, 3, 3))})
    conv = StreamingLinearCKA(reduction="mean")
    conv.update({"conv": rng.normal(size=(10, 2, 3, 3))})
    assert conv.features[("a", "conv")] == 2
    with pytest.raises(InputError, match="at least 4"):
        MinibatchCKA().update({"a": rng.normal(size=(3, 2))})


def test_streaming_estimators_take_any_magnitude(rng):
    x = rng.normal(size=(200, 6))
    y = np.tanh(x @ rng.normal(size=(6, 5))) + 0.5 * rng.normal(size=(200, 5))
    for scale in (1e200, 1e-200):
        exact, minibatch, reference = StreamingLinearCKA(), MinibatchCKA(), MinibatchCKA()
        for start in range(0, 200, 50):
            exact.update({"x": x[start:start + 50] * scale}, {"y": y[start:start + 50]})
            minibatch.update({"x": x[start:start + 50] * scale}, {"y": y[start:start + 50] / scale})
            reference.update({"x": x[start:start + 50]}, {"y": y[start:start + 50]})
        assert exact.value("x", "y") == pytest.approx(cka(x, y), rel=1e-10)
        assert minibatch.value("x", "y") == pytest.approx(reference.value("x", "y"), rel=1e-10)
