import numpy as np
import pytest
import torch
from analysis_threads import one_thread  # noqa: F401  (autouse: one intra-op thread)

from protein_performer.analysis.similarity import (
    ProfileAccumulator,
    attention_similarity,
    blosum62,
    compare_to_blosum,
    received_attention,
    similarity_matrix,
)
from protein_performer.data import DEFAULT_ALPHABET, STANDARD_AMINO_ACIDS
from protein_performer.inference import ProteinLanguageModel
from protein_performer.model import PerformerLM, preset


def _model(attention, objective="mlm"):
    torch.manual_seed(0)
    config = preset("tiny", d_model=32, num_heads=2, d_ff=64, num_features=16, attention=attention, objective=objective,
                    dropout=0.0)
    return PerformerLM(config).eval().double()


@pytest.mark.parametrize("attention,objective",
                         [("favor", "mlm"), ("favor", "causal"), ("softmax", "mlm"), ("softmax", "causal")])
def test_received_attention_equals_column_sums_of_the_explicit_matrix(attention, objective):
    model = _model(attention, objective)
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(4, 24, (2, 300), generator=g)  # longer than one block of exact query rows
    tokens[1, 250:] = DEFAULT_ALPHABET.pad_idx
    full = model.attention_maps(tokens).double()  # [B, layers, H, L, L]
    full[1, ..., 250:, :] = 0.0  # padded queries attend to nothing
    received = received_attention(model, tokens)
    torch.testing.assert_close(received, full.sum(-2), rtol=1e-6, atol=1e-8)
    assert float(received[1, ..., 250:].abs().max()) == 0.0
    torch.testing.assert_close(received[1].sum(-1), torch.full((2, 2), 250.0, dtype=torch.float64))


def test_vig_profiles_on_a_hand_built_example():
    # one sequence "A C A" seen by two heads; column sums of each head's attention matrix:
    # head 0 puts everything on the first A: received [3, 0, 0]; head 1 half on C: received [0.5, 1.5, 1]
    idx = {a: DEFAULT_ALPHABET.token_to_idx(a) for a in "AC"}
    tokens = np.array([DEFAULT_ALPHABET.cls_idx, idx["A"], idx["C"], idx["A"]])
    received = np.array([[1.0, 3.0, 0.0, 0.0], [1.0, 0.5, 1.5, 1.0]])  # <cls> receives 1 in both
    acc = ProfileAccumulator(2)
    acc.add(received, tokens)
    acc.add(received, tokens)  # a second identical sequence changes no share
    profiles = acc.profiles()
    a, c = STANDARD_AMINO_ACIDS.index("A"), STANDARD_AMINO_ACIDS.index("C")
    np.testing.assert_allclose(profiles[:, a], [3 / 4, 1.5 / 4])
    np.testing.assert_allclose(profiles[:, c], [0.0, 1.5 / 4])
    assert profiles.sum() == pytest.approx(2 * 3 / 4)  # the rest went to <cls>
    assert acc.residue_counts[a] == 4 and acc.residue_counts[c] == 2 and acc.sequences == 2
    sim = similarity_matrix(profiles)
    assert sim[a, c] == pytest.approx(-1.0)  # two heads: any two varying profiles correlate ±1


def test_spearman_against_blosum62():
    b = blosum62()
    assert b.shape == (20, 20) and b[STANDARD_AMINO_ACIDS.index("W")].max() == 11  # W/W
    assert b[STANDARD_AMINO_ACIDS.index("D"), STANDARD_AMINO_ACIDS.index("E")] == 2
    same = compare_to_blosum(b)
    assert same["spearman"] == pytest.approx(1.0) and same["pairs"] == 190 and same["p_value"] < 1e-50
    assert compare_to_blosum(-b)["spearman"] == pytest.approx(-1.0)
    noise = np.random.default_rng(0).normal(size=(20, 20))
    assert abs(compare_to_blosum(noise + noise.T)["spearman"]) < 0.2
    with_gap = b.astype(float).copy()
    with_gap[0, 1:] = np.nan
    assert compare_to_blosum(with_gap)["pairs"] == 190 - 19


def test_attention_similarity_end_to_end():
    plm = ProteinLanguageModel(_model("favor").float())
    rng = np.random.default_rng(0)
    sequences = ["".join(rng.choice(list(STANDARD_AMINO_ACIDS), size=n)) for n in (40, 70, 55)]
    result = attention_similarity(plm, sequences, max_length=50)
    assert result["sequences"] == 3 and result["residues"] == 40 + 50 + 50 and result["heads"] == 4
    assert np.asarray(result["similarity"]).shape == (20, 20)
    assert -1 <= result["comparison"]["spearman"] <= 1 and result["comparison"]["pairs"] == 190
