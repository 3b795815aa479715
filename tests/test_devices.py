"""repana.devices: one rule for naming a device, one check that it exists here."""

import pytest
import torch

from repana.devices import check_device, parse_device
from repana.errors import InputError


def test_names_parse_to_torch_devices():
    assert parse_device("cpu") == torch.device("cpu")
    assert parse_device(" cuda:1 ") == torch.device("cuda", 1)     # named only: no GPU needed
    assert parse_device(torch.device("mps")).type == "mps"
    with pytest.raises(InputError, match=r"^--device 'gpu' is not a device: use cpu, cuda, cuda:N, mps$"):
        parse_device("gpu", what="--device")
    with pytest.raises(InputError, match=r"^device 'mps' is not a device here: use cpu, cuda, cuda:N$"):
        parse_device("mps", kinds=("cpu", "cuda"))


def test_check_device_asks_this_machine():
    assert check_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match=r"^--device cuda:0: no CUDA GPU is available here.*; use --device cpu$"):
            check_device("cuda:0", what="--device")
    else:
        count = torch.cuda.device_count()
        with pytest.raises(InputError, match=rf"this machine has {count} cuda device\(s\)"):
            check_device(f"cuda:{count}")
