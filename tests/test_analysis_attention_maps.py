import pytest
import torch
from analysis_threads import one_thread  # noqa: F401  (autouse: one intra-op thread)

from protein_performer.analysis.attention_maps import (
    BPT1_BOVIN,
    attention_windows,
    head_statistics,
    sequence_attention_maps,
)
from protein_performer.inference import ProteinLanguageModel
from protein_performer.model import PerformerLM, preset


def _model(attention="favor", kernel="softmax", objective="mlm", seed=0):
    torch.manual_seed(seed)
    config = preset("tiny", d_model=32, num_heads=2, d_ff=64, num_features=16, attention=attention, kernel=kernel,
                    objective=objective, dropout=0.0)
    return PerformerLM(config).eval().double()


def _tokens(lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        tokens[i, :n] = torch.randint(4, 24, (n,), generator=g)
    return tokens


@pytest.mark.parametrize("attention,objective",
                         [("favor", "mlm"), ("favor", "causal"), ("softmax", "mlm"), ("softmax", "causal")])
def test_model_windows_equal_the_full_attention_maps_with_padding(attention, objective):
    model = _model(attention, objective=objective)
    tokens = _tokens([30, 22])
    full = model.attention_maps(tokens)  # [B, layers, H, L, L], the L×L reference
    window = attention_windows(model, tokens, 4, 12)
    assert window.shape == (2, 2, 2, 12, 12)
    torch.testing.assert_close(window, full[..., 4:16, 4:16].double(), rtol=1e-6, atol=1e-9)
    # a window running past the end is cut there; rows of a full-width window sum to one at real positions
    tail = attention_windows(model, tokens, 20, 50)
    assert tail.shape[-1] == 10
    whole = attention_windows(model, tokens[1:, :22], 0, 22)
    torch.testing.assert_close(whole.sum(-1), torch.ones(1, 2, 2, 22, dtype=torch.float64))


def test_favor_window_differs_from_exact_softmax_and_the_stats_read_it():
    favor = _model("favor")
    exact = _model("softmax")
    exact.load_state_dict(favor.state_dict(), strict=False)
    tokens = _tokens([26])
    a, b = attention_windows(favor, tokens, 0, 26), attention_windows(exact, tokens, 0, 26)
    assert (a - b).abs().max() > 1e-6  # FAVOR estimates softmax: close, not equal
    assert (a - b).abs().max() < 0.2
    eye = torch.eye(6).expand(1, 2, 6, 6)
    stats = head_statistics(eye)
    assert stats[0][0] == {"local": 1.0, "top_column": pytest.approx(1 / 6), "mean_distance": 0.0}


def test_sequence_maps_cover_residues_only():
    plm = ProteinLanguageModel(_model("favor").float())
    maps = sequence_attention_maps(plm, BPT1_BOVIN, start=10, window=20)
    assert maps.shape == (2, 2, 20, 20) and maps.dtype == torch.float32
    tokens = plm.tokenize(BPT1_BOVIN)[None]
    full = plm.model.attention_maps(tokens)[0]
    torch.testing.assert_close(maps, full[..., 11:31, 11:31], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="outside the sequence"):
        sequence_attention_maps(plm, BPT1_BOVIN, start=58)
