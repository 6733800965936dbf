"""The token vocabulary: amino-acid letters and special tokens, with fixed ids.

Token ids (fixed: checkpoints depend on them, never reorder)::

    0      <pad>      padding (never predicted, never attended)
    1      <mask>     masked position (masked-LM input, fill-mask)
    2      <cls>      start of a sequence (= BOS)
    3      <eos>      end of a sequence (also the separator in packed streams)
    4      <unk>      any letter outside the vocabulary
    5-24   A C D E F G H I K L M N P Q R S T V W Y   the 20 standard amino acids, in this order
    25-29  B O U X Z  rare / ambiguous: Asx, pyrrolysine, selenocysteine, unknown, Glx

30 tokens in all (the paper counts 29: it has no ``<unk>``). Specials come first so that
``id >= NUM_SPECIALS`` means "a residue".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<mask>", "<cls>", "<eos>", "<unk>")
STANDARD_AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
RARE_AMINO_ACIDS = "BOUXZ"
RESIDUE_LETTERS = STANDARD_AMINO_ACIDS + RARE_AMINO_ACIDS
NUM_SPECIALS = len(SPECIAL_TOKENS)

# A special token written inside a string, e.g. "MKT<mask>LL"; matched case-insensitively.
_SPECIAL_PATTERN = re.compile(r"(<[A-Za-z]+>)")
# Anything written as a token in a user's sequence (tokenize checks that it is <mask> where allowed).
_INLINE_TOKEN = re.compile(r"(<[^<>]*>)")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


class Alphabet:
    """Owns tokens and batching (see the module docstring for the id table), as fair-esm's does.

    - :meth:`tokenize`: a user's sequence → ``<cls> residues <eos>`` ids, strict: a letter outside the
      alphabet is an error naming its position (what models are given).
    - :meth:`pad`: token rows → a right-padded batch and its padding mask.
    - :meth:`residue_problem`: the one check of a sequence read from a data file.
    - :meth:`encode` / :meth:`decode`: the lenient codec underneath: upper or lower case letters and
      special tokens written inline (``"MKT<mask>LL"``), letters outside the vocabulary as ``<unk>``;
      ``decode(encode(s)) == s.upper()`` for any ``s`` made of vocabulary letters and special tokens.
    """

    def __init__(self) -> None:
        self._tokens: tuple[str, ...] = SPECIAL_TOKENS + tuple(RESIDUE_LETTERS)
        self._index = {tok: i for i, tok in enumerate(self._tokens)}
        # Byte -> id lookup table: the fast path for plain sequences (one numpy gather per string).
        lut = np.full(256, self._index["<unk>"], dtype=np.uint8)
        for letter in RESIDUE_LETTERS:
            lut[ord(letter)] = lut[ord(letter.lower())] = self._index[letter]
        self._lut = lut
        self._invalid = re.compile(f"[^{RESIDUE_LETTERS}{RESIDUE_LETTERS.lower()}]")
        self._standard = tuple(self._index[a] for a in STANDARD_AMINO_ACIDS)
        self._residues = tuple(self._index[a] for a in RESIDUE_LETTERS)

    @classmethod
    def default(cls) -> Alphabet:
        """The shared default alphabet (the only one this project uses)."""
        return DEFAULT_ALPHABET

    # ---- vocabulary -------------------------------------------------------------------------------
    @property
    def tokens(self) -> tuple[str, ...]:
        """All tokens, index = id."""
        return self._tokens

    def __len__(self) -> int:
        return len(self._tokens)

    def __repr__(self) -> str:
        return f"Alphabet({len(self)} tokens: {' '.join(self._tokens)})"

    def token_to_idx(self, token: str) -> int:
        """Id of one token (a letter in either case, or a special such as ``"<mask>"``)."""
        key = token.lower() if token.startswith("<") else token.upper()
        if key not in self._index:
            raise KeyError(f"unknown token {token!r}; known tokens: {' '.join(self._tokens)}")
        return self._index[key]

    @property
    def pad_idx(self) -> int:
        return 0

    @property
    def mask_idx(self) -> int:
        return 1

    @property
    def cls_idx(self) -> int:
        return 2

    @property
    def bos_idx(self) -> int:
        """Alias of :attr:`cls_idx` (the paper's BOS)."""
        return 2

    @property
    def eos_idx(self) -> int:
        return 3

    @property
    def unk_idx(self) -> int:
        return 4

    @property
    def special_idx(self) -> tuple[int, ...]:
        """Ids of the special tokens: ``(0, 1, 2, 3, 4)``."""
        return tuple(range(NUM_SPECIALS))

    @property
    def standard_idx(self) -> tuple[int, ...]:
        """Ids of the 20 standard amino acids, in ``ACDEFGHIKLMNPQRSTVWY`` order."""
        return self._standard

    @property
    def residue_idx(self) -> tuple[int, ...]:
        """Ids of all 25 amino-acid letters (standard, then ``BOUXZ``)."""
        return self._residues

    # ---- encode / decode --------------------------------------------------------------------------
    def encode_array(self, seq: str) -> np.ndarray:
        """Encode a plain letter string (no inline specials) to ``uint8`` ids ``[T]``, ``T = len(seq)``.

        The fast path used to load corpora; unknown letters (and ``<``, ``>``) become ``<unk>``.
        """
        if not seq.isascii():
            seq = _NON_ASCII.sub("?", seq)  # one <unk> per character, not per UTF-8 byte
        return self._lut[np.frombuffer(seq.encode("ascii"), dtype=np.uint8)]

    def encode(self, seq: str, *, add_special_tokens: bool = False) -> list[int]:
        """Encode ``seq`` to a list of ids (length ``len(seq)`` when it has no inline specials).

        Inline special tokens (``"MKT<mask>LL"``) are parsed case-insensitively; an unknown
        ``<name>`` raises ``ValueError`` (it is almost certainly a typo, not five residues).
        ``add_special_tokens=True`` wraps the result as ``<cls> ... <eos>``.
        """
        ids: list[int] = []
        for i, part in enumerate(_SPECIAL_PATTERN.split(seq)):
            if i % 2 == 1:  # odd parts are the captured <...> groups
                name = part.lower()
                if name not in self._index:
                    raise ValueError(f"unknown special token {part!r} in {seq!r}; known: {' '.join(SPECIAL_TOKENS)}")
                ids.append(self._index[name])
            elif part:
                ids.extend(self.encode_array(part).tolist())
        if add_special_tokens:
            ids = [self.cls_idx, *ids, self.eos_idx]
        return ids

    def encode_tensor(self, seq: str, *, add_special_tokens: bool = False) -> Tensor:
        """:meth:`encode` as a ``long`` tensor ``[T]``."""
        return torch.tensor(self.encode(seq, add_special_tokens=add_special_tokens), dtype=torch.long)

    def first_invalid(self, sequence: str) -> int | None:
        """0-based index of the first character of ``sequence`` that is not a residue letter (either
        case), or None: the check of every sequence read from a file."""
        bad = self._invalid.search(sequence)
        return None if bad is None else bad.start()

    def residue_problem(self, sequence: str) -> str | None:
        """Why ``sequence`` (upper case) cannot be a protein of this alphabet, or None: empty, or
        letters outside it (each named once)."""
        if not sequence:
            return "an empty sequence"
        if self.first_invalid(sequence) is None:
            return None
        bad = sorted(set(sequence) - set(RESIDUE_LETTERS))
        return f"letters {''.join(bad)!r} outside {RESIDUE_LETTERS}"

    def tokenize(self, sequence: str, *, allow_mask: bool = False) -> Tensor:
        """A user's ``sequence`` → ids ``[L + 2]`` as ``<cls> residues <eos>``; with ``allow_mask`` an
        inline ``<mask>`` stands for one residue. Any other letter or token is a ``ValueError``
        naming the 1-based position."""
        ids: list[int] = []
        allowed = f"the amino-acid letters {RESIDUE_LETTERS} (either case)" + (" and <mask>" if allow_mask else "")
        for part in _INLINE_TOKEN.split(sequence.strip()):
            if not part:
                continue
            if part.startswith("<") and part.endswith(">"):
                if allow_mask and part.lower() == "<mask>":
                    ids.append(self.mask_idx)
                    continue
                raise ValueError(f"invalid token {part!r} at position {len(ids) + 1} of the sequence: allowed are {allowed}")
            bad = self.first_invalid(part)
            if bad is not None:
                raise ValueError(f"invalid letter {part[bad]!r} at position {len(ids) + bad + 1} of the sequence: allowed are {allowed}")
            ids.extend(self.encode_array(part).tolist())
        if not ids:
            raise ValueError("empty sequence: give at least one residue")
        return torch.tensor([self.cls_idx, *ids, self.eos_idx], dtype=torch.long)

    def pad(self, samples: Sequence[Tensor | np.ndarray | Sequence[int]]) -> tuple[Tensor, Tensor]:
        """Right-pad 1-D token rows ``[T_i]`` with ``<pad>``: ``tokens`` long ``[B, T]`` and
        ``padding_mask`` bool ``[B, T]`` (True at padding), ``T = max T_i``."""
        if len(samples) == 0:
            raise ValueError("cannot collate an empty batch")
        rows = [torch.as_tensor(s).long() for s in samples]
        if any(r.ndim != 1 for r in rows):
            raise ValueError(f"samples must be 1-D token sequences, got shapes {[tuple(r.shape) for r in rows]}")
        length = max(len(r) for r in rows)
        tokens = torch.full((len(rows), length), self.pad_idx, dtype=torch.long)
        padding_mask = torch.ones(len(rows), length, dtype=torch.bool)
        for b, row in enumerate(rows):
            tokens[b, : len(row)] = row
            padding_mask[b, : len(row)] = False
        return tokens, padding_mask

    def decode(self, ids: Iterable[int] | Tensor | np.ndarray) -> str:
        """Ids ``[T]`` back to a string; specials are written as ``<pad>``, ``<mask>``, ..."""
        if isinstance(ids, (Tensor, np.ndarray)):
            if ids.ndim != 1:
                raise ValueError(f"decode takes one sequence of ids [T], got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        tokens = self._tokens
        out = []
        for i in ids:
            if not 0 <= i < len(tokens):
                raise ValueError(f"token id {i} is outside the alphabet (0..{len(tokens) - 1})")
            out.append(tokens[i])
        return "".join(out)


DEFAULT_ALPHABET = Alphabet()
