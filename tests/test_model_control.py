"""The no-context control (``attention="none"``): the same model without its attention sublayers, so
the distance between it and a model with attention is what context buys."""

import pytest
import torch

from protein_performer.cli import main
from protein_performer.convert import ConversionError, convert_model
from protein_performer.model import PerformerConfig, PerformerLM
from protein_performer.rundir import save_model


def control(**changes) -> PerformerLM:
    torch.manual_seed(0)
    return PerformerLM(PerformerConfig(d_model=32, num_layers=2, num_heads=4, d_ff=64, dropout=0.0, attention="none",
                                       **changes)).eval()


@pytest.mark.parametrize("positions", ["rotary", "learned"])
@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_each_position_sees_only_its_own_token(positions, norm_position):
    model = control(positions=positions, norm_position=norm_position)
    tokens = torch.randint(4, 29, (1, 40))
    changed = tokens.clone()
    changed[0, 20:] = torch.randint(4, 29, (20,))
    a, b = model(tokens)["logits"], model(changed)["logits"]
    torch.testing.assert_close(a[0, :20], b[0, :20], rtol=0, atol=0)
    assert not torch.equal(a[0, 20:], b[0, 20:])
    # Same token at two positions: the same output with rotary (no position information at all),
    # different outputs with learned positions.
    same = torch.full((1, 8), 7)
    out = model(same)["logits"][0]
    assert torch.allclose(out[0], out[5]) == (positions == "rotary")


def test_no_attention_parameters_and_the_size_estimate_counts_what_is_there():
    model = control()
    names = [n for n, _ in model.named_parameters()]
    assert not any(".attn" in n for n in names) and any(".ff." in n for n in names)
    with_attention = PerformerLM(PerformerConfig(d_model=32, num_layers=2, num_heads=4, d_ff=64, attention="softmax"))
    assert model.config.num_values() == model.num_parameters()
    assert with_attention.config.num_values() == with_attention.num_parameters()
    loss = model(torch.randint(4, 29, (2, 16)))["logits"].square().mean()
    loss.backward()  # every parameter takes part (nothing unused for DDP)
    assert all(p.grad is not None for p in model.parameters())


def test_analyses_and_conversion_refuse_the_control_in_one_line(tmp_path, capsys):
    model = control()
    save_model(model, model.config, tmp_path / "m")
    with pytest.raises(ValueError, match="no attention"):
        model.attention_maps(torch.randint(4, 29, (1, 10)))
    code = main(["analyze", "attention-maps", "--checkpoint", str(tmp_path / "m"), "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no attention" in err, err
    with pytest.raises(ConversionError, match="'favor' or 'softmax'"):
        convert_model(tmp_path / "m", tmp_path / "c", attention="none")


@pytest.mark.slow
def test_train_and_evaluate_the_control(tmp_path, capsys):
    args = ["train", "--attention", "none", "--out", str(tmp_path / "run"), "--seq-len", "64", "--batch-size", "4",
            "--max-steps", "4", "--eval-every", "2", "--eval-sequences", "8", "--precision", "fp32", "--quiet"]
    assert main(args) == 0
    assert "no attention (the no-context control)" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--max-sequences", "16", "--json"]) == 0
