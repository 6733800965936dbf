"""protein_performer.devices: the default device and the errors for a device that cannot be used."""

import pytest
import torch

from protein_performer.devices import resolve_device


def test_default_is_cuda_only_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == torch.device("cuda")


def test_cpu_as_string_or_device():
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu", "", "cuda:x", "meta"])
def test_unknown_devices_name_the_choices(bad):
    with pytest.raises(ValueError, match=r"unknown device .*: `device` is cpu, cuda or cuda:N"):
        resolve_device(bad)


def test_cuda_without_cuda_says_to_use_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device 'cuda:0': CUDA is not available here .*use `device` cpu"):
        resolve_device("cuda:0")
