"""repana.data.safe_pickle.torch_load: a refused pickle, a broken file and a missing one each get their
own message: only the refused pickle suggests --unsafe-pickle."""

from __future__ import annotations

import fractions

import numpy as np
import pytest
import torch

from repana.data.safe_pickle import torch_load
from repana.errors import InputError


def test_safe_loading_reads_tensors_in_both_torch_formats(tmp_path):
    torch.save({"w": torch.arange(3.0)}, tmp_path / "zip.pt")
    torch.save({"w": torch.arange(3.0)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("zip.pt", "legacy.pt"):
        assert torch.equal(torch_load(tmp_path / name)["w"], torch.arange(3.0))


def test_a_refused_pickle_names_the_reason_and_the_opt_in(tmp_path):
    torch.save({"x": fractions.Fraction(1, 3)}, tmp_path / "obj.pt")
    with pytest.raises(InputError) as info:
        torch_load(tmp_path / "obj.pt", what="weights", error_class=InputError)
    message = str(info.value)
    assert message.startswith(f"weights {tmp_path / 'obj.pt'} holds pickled Python objects that safe loading")
    assert "GLOBAL fractions.Fraction was not an allowed global by default" in message
    assert "--unsafe-pickle" in message and "\x1b" not in message and "\n" not in message
    assert torch_load(tmp_path / "obj.pt", unsafe_pickle=True)["x"] == fractions.Fraction(1, 3)


@pytest.mark.parametrize("make", ["random", "truncated_zip", "truncated_legacy", "empty"])
def test_broken_files_are_not_torch_files_and_do_not_suggest_unpickling(tmp_path, make):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(1000)}, good, _use_new_zipfile_serialization=make != "truncated_legacy")
    data = {"random": np.random.default_rng(0).bytes(5000), "empty": b""}.get(make, good.read_bytes()[:1500])
    (tmp_path / "bad.pt").write_bytes(data)
    with pytest.raises(InputError, match="truncated or corrupt") as info:
        torch_load(tmp_path / "bad.pt", error_class=InputError)
    assert "unsafe" not in str(info.value)


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(InputError, match=r"missing.pt does not exist$"):
        torch_load(tmp_path / "missing.pt", error_class=InputError)
    with pytest.raises(InputError, match=r"is a folder, not a file"):
        torch_load(tmp_path, error_class=InputError)
