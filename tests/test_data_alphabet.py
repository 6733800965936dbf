import gzip
import json

import numpy as np
import pytest
import torch

from protein_performer.data import DATA_DIR, RESIDUE_LETTERS, STANDARD_AMINO_ACIDS, Alphabet

A = Alphabet.default()


def test_fixed_token_ids():
    # Checkpoints depend on these ids: any reordering must fail here.
    assert len(A) == 30
    assert A.tokens[:5] == ("<pad>", "<mask>", "<cls>", "<eos>", "<unk>")
    assert "".join(A.tokens[5:25]) == "ACDEFGHIKLMNPQRSTVWY"
    assert "".join(A.tokens[25:]) == "BOUXZ"
    assert (A.pad_idx, A.mask_idx, A.cls_idx, A.eos_idx, A.unk_idx) == (0, 1, 2, 3, 4)
    assert A.bos_idx == A.cls_idx
    assert A.standard_idx == tuple(range(5, 25))
    assert [A.tokens[i] for i in A.standard_idx] == list(STANDARD_AMINO_ACIDS)
    assert A.residue_idx == tuple(range(5, 30))
    assert A.special_idx == (0, 1, 2, 3, 4)
    assert A.token_to_idx("W") == A.token_to_idx("w") == 23
    assert A.token_to_idx("<MASK>") == 1
    with pytest.raises(KeyError):
        A.token_to_idx("J")


def test_default_is_shared():
    assert Alphabet.default() is Alphabet.default()
    assert Alphabet().tokens == A.tokens


def test_encode_every_letter_and_round_trip():
    ids = A.encode(RESIDUE_LETTERS)
    assert ids == list(range(5, 30))
    assert A.encode(RESIDUE_LETTERS.lower()) == ids
    assert A.decode(ids) == RESIDUE_LETTERS
    seq = "mktAYIAKqrQISFVKSHFSRQ"
    assert A.decode(A.encode(seq)) == seq.upper()


def test_inline_special_tokens():
    ids = A.encode("MKT<mask>LL")
    assert len(ids) == 6
    assert ids[3] == A.mask_idx
    assert A.decode(ids) == "MKT<mask>LL"
    assert A.encode("<MASK>a<Mask>") == [A.mask_idx, A.token_to_idx("A"), A.mask_idx]
    s = "<cls>MK<pad><eos><unk>"
    assert A.decode(A.encode(s)) == s
    with pytest.raises(ValueError, match="<maks>"):
        A.encode("MK<maks>L")


def test_add_special_tokens_and_tensor_variant():
    assert A.encode("MK", add_special_tokens=True) == [A.cls_idx, 15, 13, A.eos_idx]
    t = A.encode_tensor("MKT<mask>", add_special_tokens=True)
    assert t.dtype == torch.long and t.shape == (6,)
    assert t.tolist() == A.encode("<cls>MKT<mask><eos>")
    assert A.decode(t) == "<cls>MKT<mask><eos>"


def test_unknown_letters_become_unk_one_per_character():
    # 'J' and '*' are not amino acids; 'é' is 2 bytes in UTF-8 but must give one <unk>.
    assert A.encode("AJ*é<") == [A.token_to_idx("A"), A.unk_idx, A.unk_idx, A.unk_idx, A.unk_idx]


def test_encode_array_matches_encode():
    seq = "ACDXBzuo" * 7
    arr = A.encode_array(seq)
    assert arr.dtype == np.uint8
    assert arr.tolist() == A.encode(seq)


def test_decode_rejects_bad_ids():
    with pytest.raises(ValueError):
        A.decode([5, 30])
    with pytest.raises(ValueError):
        A.decode([-1])
    with pytest.raises(ValueError):
        A.decode(torch.zeros(2, 3, dtype=torch.long))


def test_shipped_pdb_slice_encodes_without_unk():
    with gzip.open(DATA_DIR / "pdb_ss_dev_slice.jsonl.gz", "rt") as f:
        chains = [json.loads(line) for line in f]
    assert len(chains) == 60
    for chain in chains:
        ids = A.encode(chain["sequence"])
        assert A.unk_idx not in ids
        assert A.decode(ids) == chain["sequence"]
        assert len(chain["dssp8"]) == len(chain["sequence"]) == len(chain["ca_centi_angstrom"])
