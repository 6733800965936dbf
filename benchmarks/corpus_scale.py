"""Corpora larger than memory: how fast ``prepare`` tokenizes, what a training process holds in
anonymous memory as the corpus grows (FASTA loaded into memory against a memory-mapped corpus
directory), its time to the first step, and what UniRef50 would take.

    python benchmarks/corpus_scale.py [--gigabytes 2] [--out runs/corpus_scale] [--update-docs]

1. A synthetic FASTA of ``--gigabytes`` (residues drawn with the embedded corpus's amino-acid
   frequencies, lengths from its length distribution, 60 letters a line; generated here, never
   committed) is prepared; throughput in MB/s of FASTA and residues/s.
2. Corpora of 1× and 10× the embedded one (40,000 and 400,000 proteins, the same generator), each
   from FASTA and from a prepared directory: a fresh process builds the trainer (tiny preset) and takes
   one optimizer step; its anonymous resident memory (``RssAnon``: not the page cache, which every
   process of a node shares) and its time to the first step.
3. UniRef50 (``--uniref-proteins``, ``--uniref-residues``: the size assumed) from the measured rates.

Writes OUT/results.json; ``--update-docs`` rewrites the ``corpus-scale`` section of docs/results.md
(its JSON kept as docs/figures/corpus_scale.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOCS, RESULT = ROOT / "docs" / "results.md", ROOT / "docs" / "figures" / "corpus_scale.json"
BEGIN, END = "<!-- corpus-scale:begin (written by benchmarks/corpus_scale.py) -->", "<!-- corpus-scale:end -->"


def generate(path: Path, *, proteins: int | None = None, gigabytes: float | None = None, seed: int = 0) -> dict:
    """A FASTA of synthetic proteins like the embedded corpus's, until ``proteins`` or ``gigabytes``."""
    from protein_performer.data import DEFAULT_ALPHABET, EncodedCorpus

    corpus = EncodedCorpus.from_fasta()
    letters = np.frombuffer("".join(DEFAULT_ALPHABET.tokens[i] for i in DEFAULT_ALPHABET.standard_idx).encode(), dtype=np.uint8)
    counts = corpus.residue_counts(len(DEFAULT_ALPHABET))[list(DEFAULT_ALPHABET.standard_idx)].astype(np.float64)
    rng = np.random.default_rng(seed)
    lengths = corpus.lengths
    limit = int(gigabytes * 1e9) if gigabytes else None
    written = count = residues = 0
    with open(path, "wb") as f:
        while (proteins is None or count < proteins) and (limit is None or written < limit):
            batch = min(10_000, proteins - count) if proteins else 10_000
            sizes = rng.choice(lengths, size=batch)
            stream = letters[rng.choice(len(letters), size=int(sizes.sum()), p=counts / counts.sum())]
            parts, start = [], 0
            for k, n in enumerate(sizes):
                sequence = stream[start : start + n].tobytes()
                start += n
                parts.append(b">SYN%09d\n" % (count + k) + b"\n".join(sequence[i : i + 60] for i in range(0, n, 60)) + b"\n")
            block = b"".join(parts)
            f.write(block)
            written += len(block)
            count += batch
            residues += int(sizes.sum())
    return {"path": str(path), "bytes": written, "proteins": count, "residues": residues}


PROBE = r"""
import json, sys, time
start = time.perf_counter()
from protein_performer.data import EncodedCorpus
from protein_performer.model import preset
from protein_performer.training import TrainConfig, Trainer
from pathlib import Path
data = Path(sys.argv[1])
corpus = EncodedCorpus.from_file(data)
trainer = Trainer(sys.argv[2], preset("tiny"), TrainConfig(seq_len=256, batch_size=8, micro_batch_size=8, precision="fp32"),
                  corpus=corpus)
trainer.train_step()
first = time.perf_counter() - start
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
kib = lambda key: int(status[key].split()[0])
print(json.dumps({"seconds_to_first_step": first, "anon_mib": kib("RssAnon") / 1024, "file_mib": kib("RssFile") / 1024,
                  "peak_rss_mib": kib("VmHWM") / 1024}))
"""


def probe(data: Path, scratch: Path) -> dict:
    """Memory and time to the first step of a fresh training process on ``data``."""
    out = subprocess.run([sys.executable, "-c", PROBE, str(data), str(scratch)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(args) -> dict:
    from protein_performer.data import prepare

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    big = out / "synthetic.fasta"
    generated = generate(big, gigabytes=args.gigabytes)
    result["prepare"] = []
    for workers in args.workers:
        corpus_dir = out / f"synthetic-{workers}"
        started = time.perf_counter()
        manifest = prepare(big, corpus_dir, workers=workers, progress=True)
        seconds = time.perf_counter() - started
        disk = sum(p.stat().st_size for p in corpus_dir.iterdir())
        result["prepare"].append({**generated, "workers": workers, "seconds": seconds, "mb_per_s": generated["bytes"] / 1e6 / seconds,
                                  "residues_per_s": manifest["residues"] / seconds, "corpus_bytes": disk})
        shutil.rmtree(corpus_dir)
    big.unlink()
    result["memory"] = []
    for scale in (1, 10):
        fasta = out / f"x{scale}.fasta"
        generated = generate(fasta, proteins=args.base_proteins * scale, seed=scale)
        prepared = out / f"x{scale}"
        prepare(fasta, prepared)
        for source, data in (("FASTA", fasta), ("corpus directory", prepared)):
            measured = probe(data, out / f"run-{scale}-{source.split()[0]}")
            result["memory"].append({"scale": scale, "source": source, "proteins": generated["proteins"],
                                     "residues": generated["residues"], **measured})
            print(result["memory"][-1], flush=True)
    p = max(result["prepare"], key=lambda r: r["residues_per_s"])
    result["uniref50"] = {"proteins": args.uniref_proteins, "residues": args.uniref_residues,
                          "prepare_hours": args.uniref_residues / p["residues_per_s"] / 3600, "workers": p["workers"],
                          "disk_gb": (args.uniref_residues + 8 * 3 * args.uniref_proteins + 25 * args.uniref_proteins) / 1e9}
    return result


def section(result: dict) -> str:
    first, u = result["prepare"][0], result["uniref50"]
    lines = [f"`prepare` on a synthetic plain FASTA of {first['bytes'] / 1e9:.2f} GB ({first['proteins']:,} proteins, "
             f"{first['residues']:,} residues; {first['corpus_bytes'] / 1e9:.2f} GB as a corpus directory):", "",
             "| workers | time | FASTA MB/s | residues/s |", "|---|---|---|---|",
             *(f"| {p['workers']} | {p['seconds']:.0f} s | {p['mb_per_s']:.0f} | {p['residues_per_s'] / 1e6:.1f} M |"
               for p in result["prepare"]), "",
             "| corpus | proteins | read from | anonymous memory (MiB) | mapped file pages (MiB) | time to the first step |",
             "|---|---|---|---|---|---|"]
    for m in result["memory"]:
        lines.append(f"| {m['scale']}× | {m['proteins']:,} | {m['source']} | {m['anon_mib']:,.0f} | {m['file_mib']:,.0f} | "
                     f"{m['seconds_to_first_step']:.1f} s |")
    lines += ["", f"UniRef50 at {u['proteins'] / 1e6:.0f} M proteins and {u['residues'] / 1e9:.0f} B residues (assumed): prepare "
              f"≈ {u['prepare_hours']:.1f} h at the best rate above ({u['workers']} workers on this machine's 2 cores), "
              f"≈ {u['disk_gb']:.0f} GB on disk."]
    return "\n".join(lines)


def update_docs(result: dict, docs: Path = DOCS, result_path: Path = RESULT) -> None:
    from docs_section import publish

    publish(docs, (BEGIN, END), section(result), result, result_path, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/corpus_scale"))
    parser.add_argument("--gigabytes", type=float, default=2.0, help="size of the synthetic FASTA to prepare")
    parser.add_argument("--base-proteins", type=int, default=40_000, help="the 1× corpus (10× is the other)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="prepare with each of these")
    parser.add_argument("--uniref-proteins", type=float, default=6.0e7)
    parser.add_argument("--uniref-residues", type=float, default=1.7e10)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    result = measure(args)
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(section(result))
    if args.update_docs:
        update_docs(result)


if __name__ == "__main__":
    main()
