"""Frozen-model probes on PDB chains: secondary structure (Q3, Q8) and long-range contacts (TAPE's
tasks, ESM's contact head), each beside the score a model-free baseline gets.

The data is ``pdb_ss_dev.jsonl.gz``'s format: one JSON object per chain with ``id``, ``sequence``,
``dssp8`` (H G I E B T S C per residue) and ``ca_centi_angstrom`` (Cα coordinates, 0.01 Å units).

- Split: by a hash of the chain id (:func:`probe_split`, ≈80 % train / 20 % test), the same for
  every model and run.
- Secondary structure: a linear probe (multinomial logistic regression on standardized per-residue
  embeddings of one layer, full-batch L-BFGS, a little weight decay: deterministic) trained on the
  train chains' residues, accuracy on the test chains' residues. Q3 merges H,G,I → H; E,B → E;
  T,S,C → C. Baselines: always the train chains' most frequent class; and two fair ones, the same
  probe on the residue's identity alone (one-hot) and on the identities of a window of ±7 residues
  (what a model needs no context to know, and what local sequence alone gives).
- Contacts: Cα–Cα distance < 8 Å. Features per residue pair: the attention maps of all layers × heads,
  symmetrized and APC-corrected (ESM's contact head), or (``contact_features="embedding"``) the
  elementwise product of the two residues' standardized embeddings. A logistic regression is trained
  on sampled pairs with ``|i − j| ≥ 6`` of the train chains; reported is the mean over test chains of
  the precision of its top-L/5 pairs with ``|i − j| ≥ 24``. Baseline: the mean over test chains of the
  fraction of ``|i − j| ≥ 24`` pairs in contact (a random ranking's expected precision), and the
  sequence-separation prior (the L/5 closest pairs with ``|i − j| ≥ 24`` ranked first). Chains longer
  than ``max_length`` are cropped to their first ``max_length`` residues for this part only (attention
  maps are L × L).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from tqdm import tqdm

from ..data import DEFAULT_ALPHABET, STANDARD_AMINO_ACIDS, split_bucket
from ..data.jsonlines import read_json_lines
from .model import DEFAULT_TOKENS_PER_BATCH, ProteinLanguageModel

DSSP8 = "HGIEBTSC"
DSSP8_TO_3 = {"H": "H", "G": "H", "I": "H", "E": "E", "B": "E", "T": "C", "S": "C", "C": "C"}
SS3 = "HEC"
TRAIN_FRACTION = 0.8
CONTACT_ANGSTROM = 8.0
TRAIN_MIN_SEPARATION = 6
LONG_RANGE = 24
CONTACT_FEATURES = ("attention", "embedding")
IDENTITY_WINDOW = 7  # residues on each side for the window baseline


@dataclass
class Chain:
    """One PDB chain: ``dssp8`` one letter of :data:`DSSP8` per residue, ``ca`` Cα coordinates ``[L, 3]`` in Å."""

    id: str
    sequence: str
    dssp8: str
    ca: np.ndarray

    def __len__(self) -> int:
        return len(self.sequence)

    def contacts(self, crop: int | None = None) -> np.ndarray:
        """Bool ``[L, L]``: Cα–Cα distance < 8 Å (first ``crop`` residues only, when given)."""
        ca = self.ca[:crop]
        return np.linalg.norm(ca[:, None, :] - ca[None, :, :], axis=-1) < CONTACT_ANGSTROM


def probe_split(chain_id: str) -> str:
    """``"train"`` (≈80 %) or ``"test"`` by a blake2b hash of the chain id (not of file order)."""
    return "train" if split_bucket(chain_id) < TRAIN_FRACTION else "test"


def read_chains(path: str | os.PathLike) -> list[Chain]:
    """Chains of a JSON-lines file (gzip recognized by its magic bytes); errors name file and line."""
    expected = "a JSON object with id, sequence, dssp8 and ca_centi_angstrom"
    chains = []
    for where, row in read_json_lines(path, expected=expected):
        try:
            chain = Chain(str(row["id"]), str(row["sequence"]).upper(), str(row["dssp8"]).upper(),
                          np.asarray(row["ca_centi_angstrom"], dtype=np.float64) / 100.0)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}: expected {expected}") from None
        problem = DEFAULT_ALPHABET.residue_problem(chain.sequence)
        if problem:
            raise ValueError(f"{where}: chain {chain.id!r} has {problem}")
        if not (len(chain.sequence) == len(chain.dssp8) == len(chain.ca)) or chain.ca.shape[1:] != (3,):
            raise ValueError(f"{where}: chain {chain.id!r} needs one dssp8 letter and one [x, y, z] per residue")
        bad = set(chain.dssp8) - set(DSSP8)
        if bad:
            raise ValueError(f"{where}: chain {chain.id!r} has DSSP states {''.join(sorted(bad))!r} outside {DSSP8}")
        chains.append(chain)
    if not chains:
        raise ValueError(f"{path} holds no chains")
    return chains


# ---- linear probes -------------------------------------------------------------------------------
def _standardize(train: Tensor, *others: Tensor) -> list[Tensor]:
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def fit_logistic(x: Tensor, y: Tensor, num_classes: int, *, weight_decay: float = 1e-3,
                 max_iter: int = 200) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression ``x [N, D]`` → ``y [N]`` by full-batch L-BFGS (deterministic):
    minimizes mean cross-entropy + ``weight_decay · ‖W‖²``. Returns ``W [D, C]``, ``b [C]``."""
    weight = torch.zeros(x.shape[1], num_classes, dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def _accuracy_and_baseline(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
                           num_classes: int) -> tuple[float, float]:
    train_x, test_x = _standardize(train_x, test_x)
    weight, bias = fit_logistic(train_x, train_y, num_classes)
    accuracy = float(((test_x @ weight + bias).argmax(-1) == test_y).double().mean())
    majority = int(torch.bincount(train_y, minlength=num_classes).argmax())
    return accuracy, float((test_y == majority).double().mean())


def identity_features(sequence: str, window: int) -> Tensor:
    """One-hot residue identities ``[L, (2·window + 1)·21]``: each residue's and its neighbours' within
    ``window`` (20 standard amino acids + one column for anything else, or for beyond the chain end)."""
    letters = {a: i for i, a in enumerate(STANDARD_AMINO_ACIDS)}
    ids = torch.tensor([letters.get(c, 20) for c in sequence])
    padded = F.pad(ids, (window, window), value=20)
    columns = [F.one_hot(padded[k : k + len(sequence)], 21) for k in range(2 * window + 1)]
    return torch.cat(columns, dim=-1).double()


def identity_baselines(chains: Sequence[Chain], train_rows: Sequence[int], test_rows: Sequence[int],
                       labels8: list[Tensor], to3: Tensor) -> dict:
    """Q3/Q8 of the linear probe on residue identities alone and on a ±:data:`IDENTITY_WINDOW` window."""
    out = {}
    train_8, test_8 = torch.cat([labels8[k] for k in train_rows]), torch.cat([labels8[k] for k in test_rows])
    for name, window in (("identity", 0), ("window", IDENTITY_WINDOW)):
        features = [identity_features(c.sequence, window) for c in chains]
        train_x, test_x = torch.cat([features[k] for k in train_rows]), torch.cat([features[k] for k in test_rows])
        out[f"q8_{name}"] = _accuracy_and_baseline(train_x, train_8, test_x, test_8, len(DSSP8))[0]
        out[f"q3_{name}"] = _accuracy_and_baseline(train_x, to3[train_8], test_x, to3[test_8], len(SS3))[0]
    return out


def separation_prior(chains: Sequence[Chain], test_rows: Sequence[int], max_length: int) -> float:
    """Mean over test chains of the precision of the L/5 closest pairs with ``|i − j| ≥ 24``."""
    precisions = []
    for row in test_rows:
        length = min(len(chains[row]), max_length)
        i, j = _pairs(length, LONG_RANGE)
        if len(i):
            top = np.argsort(j - i, kind="stable")[: max(1, length // 5)]
            precisions.append(float(chains[row].contacts(length)[i[top], j[top]].mean()))
    return float(np.mean(precisions)) if precisions else float("nan")


# ---- contacts --------------------------------------------------------------------------------------
def apc(x: Tensor) -> Tensor:
    """Average product correction over the last two axes ``[..., L, L]`` (as in ESM's contact head)."""
    row, col, total = x.sum(-1, keepdim=True), x.sum(-2, keepdim=True), x.sum((-1, -2), keepdim=True)
    return x - row * col / total


def attention_pair_features(plm: ProteinLanguageModel, sequence: str) -> Tensor:
    """``[L, L, layers·H]``: symmetrized, APC-corrected attention maps between residues."""
    maps = plm.attention_maps(sequence).flatten(0, 1)  # [layers·H, L, L]
    return apc(maps + maps.transpose(-1, -2)).permute(1, 2, 0)


def _pairs(length: int, min_separation: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(length, k=min_separation)
    return i, j


def _bar(enabled: bool, total: int, desc: str, unit: str = "chain") -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False, dynamic_ncols=True)


def _contact_scores(pair_features, chains: Sequence[Chain], train_rows: Sequence[int], test_rows: Sequence[int],
                    max_length: int, pairs_per_chain: int, seed: int, progress: bool = False) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    bar = _bar(progress, len(train_rows) + len(test_rows), "probe: contacts")
    for row in train_rows:
        bar.update(1)
        chain = chains[row]
        length = min(len(chain), max_length)
        i, j = _pairs(length, TRAIN_MIN_SEPARATION)
        if len(i) == 0:
            continue
        if len(i) > pairs_per_chain:
            keep = np.sort(rng.choice(len(i), pairs_per_chain, replace=False))
            i, j = i[keep], j[keep]
        xs.append(pair_features(row, length, i, j))
        ys.append(torch.from_numpy(chain.contacts(length)[i, j]).long())
    if not xs:
        raise ValueError(f"no train chain (cropped to `max_length` {max_length}) has residue pairs {TRAIN_MIN_SEPARATION} or "
                         f"more apart for the contact probe: raise `max_length` or give longer chains")
    train_x, train_y = torch.cat(xs), torch.cat(ys)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    weight, _bias = fit_logistic((train_x - mean) / std, train_y, 2)
    precisions, baselines = [], []
    for row in test_rows:
        bar.update(1)
        chain = chains[row]
        length = min(len(chain), max_length)
        i, j = _pairs(length, LONG_RANGE)
        if len(i) == 0:
            continue
        features = pair_features(row, length, i, j)
        score = torch.cat([((f - mean) / std) @ (weight[:, 1] - weight[:, 0]) for f in features.split(65536)]).numpy()
        truth = chain.contacts(length)[i, j]
        top = np.argsort(-score, kind="stable")[: max(1, length // 5)]
        precisions.append(float(truth[top].mean()))
        baselines.append(float(truth.mean()))
    bar.close()
    if not precisions:
        raise ValueError(f"no test chain (cropped to `max_length` {max_length}) is longer than {LONG_RANGE} residues for the "
                         f"contact probe: raise `max_length` or give longer chains")
    return float(np.mean(precisions)), float(np.mean(baselines))


def run_probes(
    plm: ProteinLanguageModel,
    chains: Sequence[Chain],
    *,
    layer: int = -1,
    contact_features: str = "attention",
    max_length: int = 1024,
    pairs_per_chain: int = 2000,
    tokens_per_batch: int = DEFAULT_TOKENS_PER_BATCH,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Secondary-structure and contact probes of a frozen model (see the module docstring).

    Returns ``q3``, ``q8``, ``q3_baseline``, ``q8_baseline`` (majority class), ``q3_identity``,
    ``q8_identity``, ``q3_window``, ``q8_window`` (identity probes), ``contact_precision``,
    ``contact_baseline`` (random ranking), ``contact_separation`` (separation prior), ``chains_train``, ``chains_test``, ``residues_train``, ``residues_test`` and
    the settings used. ``progress``: bars of chains on stderr (embedding, then contacts)."""
    if contact_features not in CONTACT_FEATURES:
        raise ValueError(f"contact features must be one of {CONTACT_FEATURES}, got {contact_features!r}")
    if max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    (absolute_layer,) = plm.resolve_layers(layer)
    train_rows = [k for k, c in enumerate(chains) if probe_split(c.id) == "train"]
    test_rows = [k for k, c in enumerate(chains) if probe_split(c.id) == "test"]
    if not train_rows or not test_rows:
        raise ValueError(f"{len(chains)} chains give {len(train_rows)} train and {len(test_rows)} test chains: "
                         "the probes need both (give more chains)")
    embeddings: list[Tensor] = [torch.empty(0)] * len(chains)  # [L, E] per chain, in input order
    with _bar(progress, len(chains), "probe: embed") as bar:
        for k, reps in plm.iter_representations([c.sequence for c in chains], absolute_layer, tokens_per_batch=tokens_per_batch):
            embeddings[k] = reps[absolute_layer]
            bar.update(1)

    # secondary structure
    labels8 = [torch.tensor([DSSP8.index(s) for s in c.dssp8]) for c in chains]
    to3 = torch.tensor([SS3.index(DSSP8_TO_3[s]) for s in DSSP8])
    train_x, test_x = torch.cat([embeddings[k] for k in train_rows]), torch.cat([embeddings[k] for k in test_rows])
    train_8, test_8 = torch.cat([labels8[k] for k in train_rows]), torch.cat([labels8[k] for k in test_rows])
    with _bar(progress, 2, "probe: secondary structure", unit="fit") as bar:
        q8, q8_baseline = _accuracy_and_baseline(train_x, train_8, test_x, test_8, len(DSSP8))
        bar.update(1)
        q3, q3_baseline = _accuracy_and_baseline(train_x, to3[train_8], test_x, to3[test_8], len(SS3))
        bar.update(1)

    # contacts
    # pair_features(chain row, crop length, i [P], j [P]) -> [P, D]
    if contact_features == "attention":
        def pair_features(row: int, length: int, i: np.ndarray, j: np.ndarray) -> Tensor:
            return attention_pair_features(plm, chains[row].sequence[:length])[i, j]
    else:
        mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)

        def pair_features(row: int, length: int, i: np.ndarray, j: np.ndarray) -> Tensor:
            e = (embeddings[row][:length] - mean) / std
            return e[i] * e[j]
    precision, baseline = _contact_scores(pair_features, chains, train_rows, test_rows, max_length, pairs_per_chain, seed,
                                          progress)
    return {
        "q3": q3, "q8": q8, "q3_baseline": q3_baseline, "q8_baseline": q8_baseline,
        **identity_baselines(chains, train_rows, test_rows, labels8, to3),
        "contact_precision": precision, "contact_baseline": baseline,
        "contact_separation": separation_prior(chains, test_rows, max_length),
        "chains_train": len(train_rows), "chains_test": len(test_rows),
        "residues_train": len(train_8), "residues_test": len(test_8),
        "layer": absolute_layer, "contact_features": contact_features, "max_length": max_length,
    }
