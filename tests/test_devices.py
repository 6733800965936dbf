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


def test_training_precision_defaults_to_bf16_only_where_it_is_native(monkeypatch):
    from protein_performer.training import TrainConfig
    from protein_performer.training.config import default_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for avx512_bf16, amx, expected in ((False, False, "fp32"), (True, False, "bf16"), (False, True, "bf16")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert default_precision() == expected and TrainConfig().precision == expected
    # a recorded run keeps what it used, whatever this machine would choose
    assert TrainConfig.from_dict({**TrainConfig().to_dict(), "precision": "fp32"}).precision == "fp32"
