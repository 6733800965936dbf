"""Real pretrained weights: AntiBERTy (a BERT masked LM of antibody sequences, 8 layers, hidden 512,
shipped inside the ``antiberty==0.1.3`` source package on PyPI) converted to protein-performer, exact and
FAVOR, against the Hugging Face ``BertForMaskedLM`` running the same weights.

    pip download antiberty==0.1.3 --no-deps --no-binary :all: -d /tmp/antiberty
    python benchmarks/antiberty.py --package /tmp/antiberty/antiberty-0.1.3.tar.gz [--features 16 64 256 1024 4096] [--seeds 2]

Needs ``transformers`` (the ``hf`` extra) for the reference. Each residue of four antibody variable
domains (below) is masked in turn; reported per model: accuracy (top-1 = the true residue), top-1
agreement with Hugging Face, mean KL(HF ‖ model) in nats and max |Δ log p|, all over the 20 standard
amino acids (AntiBERTy's only letters). Writes ``OUT/results.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tarfile
import time
import zipfile
from pathlib import Path

import torch
from torch.nn import functional as F

from protein_performer.convert import convert_model
from protein_performer.data import STANDARD_AMINO_ACIDS
from protein_performer.inference import load

ROOT = Path(__file__).resolve().parents[1]
# Variable domains of two well-known therapeutic antibodies, as published (trastuzumab/Herceptin:
# PDB 1N8Z; adalimumab/Humira: PDB 3WD5). Heavy (VH) and light (VL, kappa) chains.
SEQUENCES = {
    "trastuzumab VH": "EVQLVESGGGLVQPGGSLRLSCAASGFNIKDTYIHWVRQAPGKGLEWVARIYPTNGYTRYADSVKGRFTISADTSKNTAYLQMNSLRAEDTAVYYCSRWGGDGFYAMDYWGQGTLVTVSS",
    "trastuzumab VL": "DIQMTQSPSSLSASVGDRVTITCRASQDVNTAVAWYQQKPGKAPKLLIYSASFLYSGVPSRFSGSRSGTDFTLTISSLQPEDFATYYCQQHYTTPPTFGQGTKVEIK",
    "adalimumab VH": "EVQLVESGGGLVQPGRSLRLSCAASGFTFDDYAMHWVRQAPGKGLEWVSAITWNSGHIDYADSVEGRFTISRDNAKNSLYLQMNSLRAEDTAVYYCAKVSYLSTASSLDYWGQGTLVTVSS",
    "adalimumab VL": "DIQMTQSPSSLSASVGDRVTITCRASQGIRNYLAWYQQKPGKAPKLLIYAASTLQSGVPSRFSGSGSGTDFTLTISSLQPEDVATYYCQRYNRAPYTFGQGTKVEIK",
}
MODEL_FILES = {"trained_models/AntiBERTy_md_smooth/config.json": "config.json",
               "trained_models/AntiBERTy_md_smooth/pytorch_model.bin": "pytorch_model.bin",
               "trained_models/vocab.txt": "vocab.txt"}


def extract(package: Path, target: Path) -> Path:
    """The Hugging Face directory inside the package (sdist, wheel or unpacked folder) → ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    if package.is_dir():
        members = {str(p.relative_to(package)): p.read_bytes for p in package.rglob("*") if p.is_file()}
    elif package.suffix == ".whl":
        archive = zipfile.ZipFile(package)
        members = {name: (lambda n=name: archive.read(n)) for name in archive.namelist()}
    else:
        archive = tarfile.open(package)  # noqa: SIM115 (read lazily by the members below, closed at exit)
        members = {m.name: (lambda m=m: archive.extractfile(m).read()) for m in archive.getmembers() if m.isfile()}
    for suffix, name in MODEL_FILES.items():
        found = [m for m in members if m.endswith(suffix)]
        if not found:
            raise SystemExit(f"{package} has no {suffix}: give the antiberty 0.1.3 sdist, wheel or unpacked folder")
        (target / name).write_bytes(members[found[0]]())
    return target


@torch.no_grad()
def reference_log_probs(model, vocabulary: list[str], sequence: str, batch: int = 64) -> torch.Tensor:
    """Hugging Face masked marginals ``[L, 20]``: each residue masked in turn, renormalized over the 20."""
    index = {t: i for i, t in enumerate(vocabulary)}
    ids = torch.tensor([index["[CLS]"], *(index[c] for c in sequence), index["[SEP]"]])
    columns = [index[a] for a in STANDARD_AMINO_ACIDS]
    rows = []
    for start in range(0, len(sequence), batch):
        positions = torch.arange(start, min(len(sequence), start + batch)) + 1
        tokens = ids.repeat(len(positions), 1)
        tokens[torch.arange(len(positions)), positions] = index["[MASK]"]
        logits = model(input_ids=tokens, attention_mask=torch.ones_like(tokens)).logits
        rows.append(F.log_softmax(logits[torch.arange(len(positions)), positions][:, columns], dim=-1))
    return torch.cat(rows)


@torch.no_grad()
def attention_scale(plm, sequences: list[str]) -> dict:
    """What FAVOR+'s variance grows with: the squared norms of the scaled queries and keys,
    ‖q‖²/√d and ‖k‖²/√d (the estimator's relative variance grows like exp(‖q̃ + k̃‖²)), over all
    layers, heads and residues; and the median spread (max − median) of a row of attention logits."""
    norms, spreads = [], []
    model = plm.model
    for sequence in sequences:
        tokens = plm.tokenize(sequence)[None]
        for _, q, k, _ in model.attention_inputs(tokens):  # q, k [1, H, T, d] of each layer
            d = q.shape[-1]
            norms.append(torch.cat([q.pow(2).sum(-1).flatten(), k.pow(2).sum(-1).flatten()]) / d ** 0.5)
            logits = q @ k.transpose(-1, -2) / d ** 0.5
            spreads.append((logits.amax(-1) - logits.median(-1).values).flatten())
    norms, spreads = torch.cat(norms), torch.cat(spreads)
    return {"qk_norm2_median": float(norms.median()), "qk_norm2_p99": float(norms.quantile(0.99)),
            "logit_spread_median": float(spreads.median())}


def metrics(log_probs: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict:
    truth = torch.cat([torch.tensor([STANDARD_AMINO_ACIDS.index(c) for c in SEQUENCES[n]]) for n in SEQUENCES])
    ours, ref = torch.cat([log_probs[n] for n in SEQUENCES]), torch.cat([reference[n] for n in SEQUENCES])
    return {"accuracy": float((ours.argmax(-1) == truth).float().mean()),
            "agreement": float((ours.argmax(-1) == ref.argmax(-1)).float().mean()),
            "kl": float((ref.exp() * (ref - ours)).sum(-1).mean()),
            "max_abs_log_prob_difference": float((ours - ref).abs().max()),
            "residues": len(truth)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", required=True, help="antiberty-0.1.3.tar.gz (PyPI sdist), its wheel, or the unpacked folder")
    parser.add_argument("--out", default=str(ROOT / "runs" / "antiberty"))
    parser.add_argument("--features", type=int, nargs="+", default=[16, 64, 256, 1024, 4096])
    parser.add_argument("--seeds", type=int, default=2, help="projection draws per M")
    args = parser.parse_args()
    from transformers import BertForMaskedLM

    out = Path(args.out)
    source = extract(Path(args.package), out / "source")
    vocabulary = (source / "vocab.txt").read_text().split()
    hf = BertForMaskedLM.from_pretrained(source).eval()
    started = time.perf_counter()
    reference = {name: reference_log_probs(hf, vocabulary, seq) for name, seq in SEQUENCES.items()}
    rows = {"huggingface": {**metrics(reference, reference), "seconds": time.perf_counter() - started}}
    models = [("exact", "softmax", None, 0)]
    models += [(f"favor-m{m}-s{s}", "favor", m, s) for m in args.features for s in range(args.seeds)]
    notes = []
    for name, attention, m, seed in models:
        report = convert_model(source, out / name, attention=attention, num_features=m, seed=seed, overwrite=True)
        notes = report.notes
        plm = load(out / name)
        started = time.perf_counter()
        ours = {n: plm.masked_log_probs(seq, range(len(seq)), tokens_per_batch=4096) for n, seq in SEQUENCES.items()}
        rows[name] = {**metrics(ours, reference), "seconds": time.perf_counter() - started}
        r = rows[name]
        print(f"{name}: accuracy {100 * r['accuracy']:.2f}%, agreement {100 * r['agreement']:.2f}%, KL {r['kl']:.4f}, "
              f"max |dlogp| {r['max_abs_log_prob_difference']:.2e} ({r['seconds']:.0f} s)", flush=True)
    favor = []
    for m in args.features:
        per_seed = [rows[f"favor-m{m}-s{s}"] for s in range(args.seeds)]
        values = {k: [r[k] for r in per_seed] for k in ("accuracy", "agreement", "kl")}
        favor.append({"num_features": m, **{k: {"mean": statistics.fmean(v), "values": v} for k, v in values.items()}})
    scale = attention_scale(load(out / "exact"), list(SEQUENCES.values()))
    print(f"attention scale: median ‖q‖²/√d, ‖k‖²/√d {scale['qk_norm2_median']:.1f} "
          f"(99th percentile {scale['qk_norm2_p99']:.1f}), "
          f"median logit spread {scale['logit_spread_median']:.1f}")
    result = {"package": Path(args.package).name, "sequences": SEQUENCES, "conversion_notes": notes, "rows": rows, "favor": favor,
              "attention_scale": scale, "torch": torch.__version__}
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    h = rows["huggingface"]
    print(f"huggingface: accuracy {100 * h['accuracy']:.2f}% over {h['residues']} residues; wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
