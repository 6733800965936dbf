import numpy as np
import pytest
import torch
import torch.nn.functional as F

from protein_performer.data import DEFAULT_ALPHABET as A
from protein_performer.data import IGNORE_INDEX, CausalLMCollator, MaskedLMCollator

SPECIALS = torch.tensor(A.special_idx)


def random_samples(count: int, seed: int, lo: int = 20, hi: int = 400) -> list[torch.Tensor]:
    """``<cls> residues <eos>`` with all 25 residue letters and a sprinkling of ``<unk>``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        n = int(torch.randint(lo, hi, (), generator=g))
        residues = torch.randint(5, 30, (n,), generator=g)
        residues[torch.rand(n, generator=g) < 0.02] = A.unk_idx
        out.append(torch.cat([torch.tensor([A.cls_idx]), residues, torch.tensor([A.eos_idx])]))
    return out


@pytest.fixture(scope="module")
def masked_stats():
    """Collate 2,000 samples (~420k residues) in batches of 50, each batch from its own seed."""
    collator = MaskedLMCollator()
    samples = random_samples(2000, seed=0)
    batches = []
    for b in range(0, len(samples), 50):
        chunk = samples[b : b + 50]
        out = collator(chunk, torch.Generator().manual_seed(b))
        original, _ = A.pad(chunk)
        batches.append((original, out))
    return batches


def test_masking_rates(masked_stats):
    candidates = chosen = as_mask = changed = kept = 0
    for original, out in masked_stats:
        is_candidate = original >= 5  # residues only: not pad, specials or <unk>
        predicted = out["labels"] != IGNORE_INDEX
        candidates += int(is_candidate.sum())
        chosen += int(predicted.sum())
        tok = out["tokens"][predicted]
        orig = original[predicted]
        as_mask += int((tok == A.mask_idx).sum())
        changed += int(((tok != A.mask_idx) & (tok != orig)).sum())
        kept += int((tok == orig).sum())
    assert candidates > 300_000
    assert abs(chosen / candidates - 0.15) < 0.01
    # A random replacement equals the original 1 time in 20 (of the standard ones it can be).
    assert abs(as_mask / chosen - 0.80) < 0.02
    assert abs(changed / chosen - 0.10 * 19 / 20) < 0.02
    assert abs(kept / chosen - (0.10 + 0.10 / 20)) < 0.02
    assert as_mask + changed + kept == chosen


def test_labels_and_untouched_positions(masked_stats):
    for original_t, out in masked_stats:
        # numpy: boolean indexing of small torch tensors is slow on a busy 2-core machine.
        original, tokens, labels = original_t.numpy(), out["tokens"].numpy(), out["labels"].numpy()
        predicted = labels != IGNORE_INDEX
        # Labels are the original tokens, exactly where something is predicted.
        assert np.array_equal(labels[predicted], original[predicted])
        # Specials, <unk> and padding: never predicted, never altered.
        special = np.isin(original, SPECIALS.numpy())
        assert not predicted[special].any()
        assert np.array_equal(tokens[special], original[special])
        # Positions not predicted keep their token; replacements are standard amino acids only.
        assert np.array_equal(tokens[~predicted], original[~predicted])
        replaced = tokens[predicted & (tokens != original) & (tokens != A.mask_idx)]
        assert len(replaced) > 0 and (replaced >= 5).all() and (replaced < 25).all()
        # Every row with residues has at least one prediction.
        assert predicted.any(axis=1).all()


def test_rare_letters_are_maskable(masked_stats):
    rare = torch.cat([out["labels"][out["labels"] >= 25] for _, out in masked_stats])
    assert len(rare) > 1000 and set(rare.tolist()) == {25, 26, 27, 28, 29}


def test_padding_and_shapes():
    samples = [torch.tensor([2, 5, 6, 7, 3]), np.array([2, 8, 3], dtype=np.uint8), [2, 9, 10, 3]]
    out = MaskedLMCollator()(samples, torch.Generator().manual_seed(0))
    assert set(out) == {"tokens", "labels", "padding_mask"}
    assert out["tokens"].shape == out["labels"].shape == out["padding_mask"].shape == (3, 5)
    assert out["tokens"].dtype == out["labels"].dtype == torch.long and out["padding_mask"].dtype == torch.bool
    assert out["padding_mask"].tolist() == [[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True]]
    assert (out["tokens"][out["padding_mask"]] == A.pad_idx).all()
    assert (out["labels"][out["padding_mask"]] == IGNORE_INDEX).all()


def test_deterministic_given_generator():
    samples = random_samples(16, seed=1)
    collator = MaskedLMCollator()
    a = collator(samples, torch.Generator().manual_seed(7))
    b = collator(samples, torch.Generator().manual_seed(7))
    c = collator(samples, torch.Generator().manual_seed(8))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["labels"], c["labels"])


def test_per_sample_generators_make_rows_independent_of_the_batch():
    samples = random_samples(6, seed=2)
    collator = MaskedLMCollator()

    def gens(idx):
        return [torch.Generator().manual_seed(100 + i) for i in idx]

    full = collator(samples, gens(range(6)))
    part = collator(samples[3:5], gens(range(3, 5)))
    for r, row in enumerate((3, 4)):
        n = len(samples[row])
        assert torch.equal(part["tokens"][r, :n], full["tokens"][row, :n])
        assert torch.equal(part["labels"][r, :n], full["labels"][row, :n])
    with pytest.raises(ValueError):
        collator(samples, gens(range(5)))


def test_existing_mask_tokens_are_not_targets():
    # Fill-mask input already holds <mask>: it is a special, not a residue to predict.
    sample = A.encode_tensor("MKT<mask>LLAAGG", add_special_tokens=True)
    out = MaskedLMCollator(mask_prob=1.0)([sample], torch.Generator().manual_seed(0))
    assert out["labels"][0, 4] == IGNORE_INDEX
    assert (out["labels"][0] != IGNORE_INDEX).sum() == 9  # every residue, nothing else


def test_bad_probabilities():
    with pytest.raises(ValueError):
        MaskedLMCollator(mask_prob=0.0)
    with pytest.raises(ValueError):
        MaskedLMCollator(mask_token_prob=0.9, random_token_prob=0.2)
    with pytest.raises(ValueError):
        MaskedLMCollator()([])


def test_causal_labels_are_next_tokens():
    samples = [torch.tensor([2, 5, 6, 7, 3]), torch.tensor([2, 8, 3])]
    out = CausalLMCollator()(samples)
    assert out["tokens"].tolist() == [[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]]
    assert out["labels"].tolist() == [[5, 6, 7, 3, -100], [8, 3, -100, -100, -100]]
    assert out["padding_mask"].tolist() == [[False] * 5, [False] * 3 + [True] * 2]


def test_causal_labels_on_random_batch_and_loss_ignores_padding():
    samples = random_samples(8, seed=3, lo=3, hi=40)
    out = CausalLMCollator()(samples, torch.Generator())  # a generator is accepted and unused
    for b, s in enumerate(samples):
        n = len(s)
        assert torch.equal(out["labels"][b, : n - 1], s[1:])
        assert (out["labels"][b, n - 1 :] == IGNORE_INDEX).all()
    # Cross-entropy over the batch equals the mean over real next-token pairs only.
    logits = torch.randn(*out["tokens"].shape, len(A))
    loss = F.cross_entropy(logits.flatten(0, 1), out["labels"].flatten())
    pairs = [(logits[b, t], samples[b][t + 1]) for b in range(8) for t in range(len(samples[b]) - 1)]
    manual = torch.stack([F.cross_entropy(lg[None], y[None]) for lg, y in pairs]).mean()
    assert torch.allclose(loss, manual)
