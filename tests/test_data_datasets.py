import math
import random
import time

import numpy as np
import pytest
import torch

from protein_performer.data import (
    DEFAULT_ALPHABET as A,
)
from protein_performer.data import (
    EncodedCorpus,
    MaskedLMCollator,
    PackedDataset,
    SingleSequenceDataset,
    split_of,
)


def random_corpus(n=60, lo=5, hi=120, seed=0) -> tuple[EncodedCorpus, list[str]]:
    rng = random.Random(seed)
    seqs = ["".join(rng.choices("ACDEFGHIKLMNPQRSTVWYX", k=rng.randint(lo, hi))) for _ in range(n)]
    return EncodedCorpus.from_sequences(seqs, [f"P{i:05d}" for i in range(n)]), seqs


@pytest.fixture(scope="module")
def real_corpus():
    start = time.perf_counter()
    corpus = EncodedCorpus.from_fasta()
    return corpus, time.perf_counter() - start


# ---- EncodedCorpus ---------------------------------------------------------------------------------


def test_corpus_layout():
    corpus, seqs = random_corpus()
    assert len(corpus) == len(seqs)
    assert corpus.residues.dtype == np.uint8
    assert corpus.offsets[0] == 0 and corpus.offsets[-1] == corpus.num_residues == sum(map(len, seqs))
    assert corpus.lengths.tolist() == [len(s) for s in seqs]
    for i in (0, 17, len(seqs) - 1):
        assert A.decode(corpus[i]) == seqs[i]


def test_subset_and_select_partition_the_corpus():
    corpus, seqs = random_corpus(n=400)
    sub = corpus.subset([5, 2, 9])
    assert sub.ids == ["P00005", "P00002", "P00009"]
    assert [A.decode(sub[i]) for i in range(3)] == [seqs[5], seqs[2], seqs[9]]
    parts = {name: corpus.select(name) for name in ("train", "valid", "test")}
    assert sum(len(p) for p in parts.values()) == len(corpus)
    assert sorted(i for p in parts.values() for i in p.ids) == corpus.ids
    for name, part in parts.items():
        assert all(split_of(i) == name for i in part.ids)
        for k, acc in enumerate(part.ids):
            assert A.decode(part[k]) == seqs[int(acc[1:])]
    with pytest.raises(ValueError):
        corpus.select("validation")


def test_selections_are_views_that_copy_no_residues():
    corpus, _ = random_corpus(n=400)
    train = corpus.select("train")
    picked = train.subset([7, 3, 3, 0])  # a view of a view
    assert np.shares_memory(train[0], corpus.residues) and np.shares_memory(picked[1], corpus.residues)
    assert [A.decode(picked[i]) for i in range(4)] == [A.decode(train[i]) for i in (7, 3, 3, 0)]
    assert list(picked.ids) == [train.ids[i] for i in (7, 3, 3, 0)] and picked.ids[-1] == train.ids[0]
    copied = EncodedCorpus.from_sequences([A.decode(train[i]) for i in range(len(train))], list(train.ids))
    assert train.lengths.tolist() == copied.lengths.tolist() and train.num_residues == copied.num_residues
    assert np.array_equal(train.residues, copied.residues) and np.array_equal(train.offsets, copied.offsets)
    assert np.array_equal(train.residue_counts(len(A)), np.bincount(copied.residues, minlength=len(A)))
    for regime in (PackedDataset(train, seq_len=29, train=False), SingleSequenceDataset(train, seq_len=40, train=False)):
        other = type(regime)(copied, seq_len=regime.seq_len, train=False)
        assert len(regime) == len(other) and all(torch.equal(regime[g], other[g]) for g in range(len(other)))
    with pytest.raises(IndexError):
        train.subset([len(train)])


def test_from_fasta_split_matches_select(tmp_path):
    corpus, seqs = random_corpus(n=300)
    path = tmp_path / "c.fasta"
    path.write_text("".join(f">{i} desc\n{s.lower()}\n" for i, s in zip(corpus.ids, seqs, strict=True)))
    loaded = EncodedCorpus.from_fasta(path)
    assert loaded.ids == corpus.ids and np.array_equal(loaded.residues, corpus.residues)
    test = EncodedCorpus.from_fasta(path, split="test")
    assert test.ids == corpus.select("test").ids and np.array_equal(test.residues, corpus.select("test").residues)


def test_real_corpus_loads_fast(real_corpus):
    corpus, seconds = real_corpus
    assert seconds < 10.0, f"loading the default corpus took {seconds:.1f} s"
    assert len(corpus) == 40_000 and corpus.num_residues == 16_361_242
    lengths = corpus.lengths
    assert lengths.min() == 30 and lengths.max() == 22_152 and np.median(lengths) == 313
    assert int((lengths > 1024).sum()) == 2_049 and int((lengths > 8192).sum()) == 6
    assert corpus.residues.min() >= 5 and corpus.residues.max() <= 29  # residues only, no <unk>


# ---- regime (a): single sequences ----------------------------------------------------------------------


def test_single_eval_is_first_window_in_order():
    corpus, seqs = random_corpus()
    ds = SingleSequenceDataset(corpus, seq_len=42, train=False)
    assert len(ds) == len(seqs)
    for i, seq in enumerate(seqs):
        sample = ds[i]
        assert sample.dtype == torch.long
        assert A.decode(sample) == "<cls>" + seq[:40] + "<eos>"
    with pytest.raises(IndexError):
        ds[len(seqs)]


def test_single_train_crops_are_windows_placed_uniformly():
    seq = "".join(random.Random(1).choices("ACDEFGHIKLMNPQRSTVWY", k=100))
    corpus = EncodedCorpus.from_sequences([seq])
    ds = SingleSequenceDataset(corpus, seq_len=12, train=True, seed=3)  # 10 residues, 91 placements
    starts = []
    for g in range(3000):
        text = A.decode(ds[g])
        assert text.startswith("<cls>") and text.endswith("<eos>") and len(ds[g]) == 12
        window = text[5:-5]
        starts.append(seq.index(window))
        assert seq[starts[-1] : starts[-1] + 10] == window
    counts = np.bincount(starts, minlength=91)
    assert counts.min() > 5 and counts.max() < 70  # every placement, none favored (mean 33)


def test_single_train_epochs_are_fresh_permutations():
    corpus, _ = random_corpus(n=50)
    ds = SingleSequenceDataset(corpus, seq_len=1000, seed=5)
    epoch0 = [ds.item_of(g) for g in range(50)]
    epoch1 = [ds.item_of(g) for g in range(50, 100)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(50))
    assert epoch0 != epoch1 and epoch0 != list(range(50))


def test_same_seed_same_data_regardless_of_access_order():
    corpus, _ = random_corpus(n=30, hi=300)
    a = SingleSequenceDataset(corpus, seq_len=64, seed=11)
    b = SingleSequenceDataset(corpus, seq_len=64, seed=11)
    # b jumps straight to step 9 (a resumed run), then back: the permutation cache must not leak.
    later = b.step_batch(9, 8).samples
    first = b.step_batch(0, 8).samples
    for got, want in zip(later + first, a.step_batch(9, 8).samples + a.step_batch(0, 8).samples, strict=True):
        assert torch.equal(got, want)
    c = SingleSequenceDataset(corpus, seq_len=64, seed=12)
    assert any(not torch.equal(x, y) for x, y in zip(c.step_batch(0, 8).samples, first, strict=True))


@pytest.mark.parametrize("regime", ["single", "packed"])
def test_rank_slices_reassemble_the_global_batch(regime):
    corpus, _ = random_corpus(n=120, hi=200)
    if regime == "single":
        ds = SingleSequenceDataset(corpus, seq_len=48, seed=2)
    else:
        ds = PackedDataset(corpus, seq_len=32, seed=2)
    collator = MaskedLMCollator()
    batch_size = 16
    step = len(ds) // batch_size  # this step's batch straddles the first epoch boundary
    assert len(ds) % batch_size != 0
    full = ds.step_batch(step, batch_size)
    full_batch = collator(full.samples, full.generators)
    for world in (2, 4, 8):
        per_rank = batch_size // world
        for rank in range(world):
            part = ds.step_batch(step, batch_size, rank * per_rank, (rank + 1) * per_rank)
            assert list(part.indices) == list(full.indices[rank * per_rank : (rank + 1) * per_rank])
            part_batch = collator(part.samples, part.generators)
            for r, sample in enumerate(part.samples):
                row = rank * per_rank + r
                assert torch.equal(sample, full.samples[row])
                n = len(sample)  # masks agree on the real tokens, whatever the padded length
                for key in ("tokens", "labels"):
                    assert torch.equal(part_batch[key][r, :n], full_batch[key][row, :n])


def test_dataloader_workers_see_the_same_samples():
    corpus, _ = random_corpus(n=50, hi=200)
    ds = SingleSequenceDataset(corpus, seq_len=40, seed=9)
    steps = [list(ds.step_indices(s, 8)) for s in (0, 6, 7, 30)]
    loader = torch.utils.data.DataLoader(ds, batch_sampler=steps, num_workers=2, collate_fn=list)
    for step, got in zip((0, 6, 7, 30), loader, strict=True):
        want = ds.step_batch(step, 8).samples
        assert all(torch.equal(x, y) for x, y in zip(got, want, strict=True))


def test_eval_steps_cover_the_data_once():
    corpus, _ = random_corpus(n=45)
    ds = SingleSequenceDataset(corpus, seq_len=16, train=False)
    assert ds.steps_per_epoch(10) == 5
    steps = list(ds.iter_steps(10))
    assert [len(s.samples) for s in steps] == [10, 10, 10, 10, 5]
    assert [g for s in steps for g in s.indices] == list(range(45))
    assert len(ds.step_indices(7, 10)) == 0
    assert list(ds.step_indices(4, 10, 2, 8)) == [42, 43, 44]


def test_train_steps_run_on_across_epochs():
    corpus, _ = random_corpus(n=45)
    ds = SingleSequenceDataset(corpus, seq_len=16, seed=0)
    assert list(ds.step_indices(4, 10)) == list(range(40, 50))
    assert len(ds.step_batch(4, 10).samples) == 10
    it = ds.iter_steps(10, start_step=100)
    assert next(it).indices == range(1000, 1010)
    with pytest.raises(ValueError):
        ds.step_indices(0, 10, 4, 11)


def test_bad_arguments():
    corpus, _ = random_corpus(n=3)
    with pytest.raises(ValueError):
        SingleSequenceDataset(corpus, seq_len=2)
    with pytest.raises(ValueError):
        SingleSequenceDataset(corpus, seed=-1)
    with pytest.raises(ValueError):
        PackedDataset(corpus, seq_len=10_000)


# ---- regime (b): packed windows --------------------------------------------------------------------


@pytest.mark.parametrize("drop_last", [True, False])
def test_packed_windows_tile_the_eos_joined_stream(drop_last):
    corpus, seqs = random_corpus(n=40)
    seq_len = 37
    ds = PackedDataset(corpus, seq_len=seq_len, train=False, drop_last=drop_last)
    stream = "".join(s + "<eos>" for s in seqs)
    total = sum(len(s) + 1 for s in seqs)
    assert len(ds) == (total // seq_len if drop_last else math.ceil(total / seq_len))
    windows = [ds[i] for i in range(len(ds))]
    assert all(len(w) == seq_len for w in windows[: total // seq_len])
    joined = A.decode(torch.cat(windows))
    assert stream.startswith(joined)
    assert len(torch.cat(windows)) == ((total // seq_len) * seq_len if drop_last else total)


def test_packed_train_permutes_windows_per_epoch():
    corpus, _ = random_corpus(n=40)
    train = PackedDataset(corpus, seq_len=20, seed=4)
    fixed = PackedDataset(corpus, seq_len=20, train=False)
    n = len(train)
    epoch0 = [train.item_of(g) for g in range(n)]
    assert sorted(epoch0) == list(range(n)) and epoch0 != list(range(n))
    assert epoch0 != [train.item_of(g) for g in range(n, 2 * n)]
    assert torch.equal(train[0], fixed[epoch0[0]])


def test_packed_real_corpus(real_corpus):
    corpus, _ = real_corpus
    start = time.perf_counter()
    ds = PackedDataset(corpus, seq_len=8192, seed=0)
    assert time.perf_counter() - start < 2.0
    assert len(ds) == (16_361_242 + 40_000) // 8192 == 2_002
    window = ds[12345]
    assert window.shape == (8192,)
    eos = int((window == A.eos_idx).sum())
    assert 5 <= eos <= 80  # median protein ~313 residues -> ~20 ends per window
    assert int((window < 5).sum()) == eos  # no other specials in the stream


def test_single_real_corpus(real_corpus):
    corpus, _ = real_corpus
    ds = SingleSequenceDataset(corpus.select("valid"), seq_len=1024, train=False)
    assert len(ds) == 982
    lengths = [len(ds[i]) for i in range(len(ds))]
    assert max(lengths) == 1024 and min(lengths) >= 32
