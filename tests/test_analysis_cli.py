import json
import re

import pytest
import torch
from analysis_threads import one_thread  # noqa: F401  (autouse: one intra-op thread)

from protein_performer.analysis.attention_maps import BPT1_BOVIN
from protein_performer.cli import main
from protein_performer.model import PerformerLM, preset
from protein_performer.rundir import save_model as save_weights


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny FAVOR model saved as a training run (weights, config, a few metrics lines)."""
    path = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    config = preset("tiny", d_model=32, num_heads=2, d_ff=64, num_features=16, dropout=0.0)
    save_weights(PerformerLM(config), config, path)
    lines = [{"step": s, "train/loss": 3.0 - s / 100, "train/accuracy": 0.1 + s / 1000} for s in (10, 20, 30)]
    lines.append({"step": 30, "valid/loss": 2.8, "valid/accuracy": 0.12, "valid/perplexity": 16.0})
    (path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def fasta(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "proteins.fasta"
    path.write_text(f">bpti\n{BPT1_BOVIN}\n>p2\nMKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQ\n>p3\nGSHMLEDPVDAFQ\n")
    return path


def _fails_cleanly(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_approximation_writes_png_and_json(tmp_path, run_dir, fasta, capsys):
    out = tmp_path / "approx"
    assert main(["analyze", "approximation", "--out", str(out), "--samples", "2", "--length", "64", "--features", "16", "32",
                 "--checkpoint", str(run_dir), "--fasta", str(fasta), "--max-length", "40", "--quiet"]) == 0
    result = json.loads((out / "approximation.json").read_text())
    assert set(result["random"]["mse"]) == {"softmax", "softmax_trig", "softmax_hyperbolic"}
    assert set(result["random"]["mse"]["softmax"]["iid"]) == {"16", "32"}
    assert result["checkpoint"]["samples"] == 2 * 2 * 2 and result["checkpoint"]["dim"] == 16
    for name in ("approximation.png", "approximation_checkpoint.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "M=16" in capsys.readouterr().out
    _fails_cleanly(capsys, ["analyze", "approximation", "--out", str(out), "--features", "0"], "must be positive")


def test_attention_maps_writes_png_json_npz(tmp_path, run_dir, fasta, capsys):
    out = tmp_path / "maps"
    assert main(["analyze", "attention-maps", "--checkpoint", str(run_dir), "--out", str(out)]) == 0  # BPT1_BOVIN by default
    result = json.loads((out / "attention_maps_BPT1_BOVIN.json").read_text())
    assert result["window"] == len(BPT1_BOVIN) == 58 and len(result["heads"]) == 2 and len(result["heads"][0]) == 2
    assert (out / "attention_maps_BPT1_BOVIN.png").exists() and (out / "attention_maps_BPT1_BOVIN.npz").exists()
    assert main(["analyze", "attention-maps", "--checkpoint", str(run_dir), "--fasta", str(fasta), "--id", "p2", "--start", "5",
                 "--window", "20", "--out", str(out)]) == 0
    result = json.loads((out / "attention_maps_p2.json").read_text())
    assert result["start"] == 5 and result["window"] == 20 and result["residues"] == "IAKQRQISFVKSHFSRQLEE"
    _fails_cleanly(capsys, ["analyze", "attention-maps", "--checkpoint", str(run_dir), "--fasta", str(fasta), "--id", "nope"], "no record")
    _fails_cleanly(capsys, ["analyze", "attention-maps", "--checkpoint", str(run_dir), "--sequence", "MKJ"], "invalid letter 'J'")
    _fails_cleanly(capsys, ["analyze", "attention-maps", "--checkpoint", str(run_dir), "--fasta", str(fasta)], "--fasta needs --id")
    _fails_cleanly(capsys, ["analyze", "attention-maps", "--checkpoint", str(run_dir), "--fasta", str(tmp_path / "no.fa"), "--id", "x"],
                   "no.fa: FASTA file not found")
    _fails_cleanly(capsys, ["analyze", "attention-maps", "--checkpoint", str(tmp_path / "none")], "")


def test_similarity_writes_png_and_json(tmp_path, run_dir, fasta, capsys):
    out = tmp_path / "sim"
    assert main(["analyze", "similarity", "--checkpoint", str(run_dir), "--fasta", str(fasta), "--sequences", "2",
                 "--label", "tiny", "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "similarity_tiny.json").read_text())
    assert result["sequences"] == 2 and result["residues"] == 58 + 66
    assert "Spearman correlation with BLOSUM62" in capsys.readouterr().out
    assert (out / "similarity_tiny.png").exists()
    _fails_cleanly(capsys, ["analyze", "similarity", "--checkpoint", str(run_dir), "--sequences", "0"], "must be positive")


def test_report_is_self_contained_and_holds_every_figure(tmp_path, run_dir, fasta, capsys, monkeypatch):
    import protein_performer.training.evaluation as evaluate_module

    analysis = tmp_path / "analysis"
    main(["analyze", "approximation", "--out", str(analysis), "--samples", "1", "--length", "32", "--features", "16", "--quiet"])
    main(["analyze", "attention-maps", "--checkpoint", str(run_dir), "--out", str(analysis), "--window", "16"])
    main(["analyze", "similarity", "--checkpoint", str(run_dir), "--fasta", str(fasta), "--label", "tiny", "--out", str(analysis), "--quiet"])
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "bench_plot.png").write_bytes((analysis / "approximation.png").read_bytes())
    fixed = {"accuracy": 0.1234, "perplexity": 15.5, "baseline_accuracy": 0.0935, "baseline_perplexity": 18.09,
             "tokens": 999, "sequences": 7, "objective": "mlm"}
    monkeypatch.setattr(evaluate_module, "evaluate", lambda run, **_: fixed)
    out = tmp_path / "report.html"
    assert main(["report", "--run", str(run_dir), "--analysis", str(analysis), "--figures", str(figures), "--out", str(out)]) == 0
    page = out.read_text()
    sources = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http" not in page and "url(" not in page
    # curves + approximation + attention maps + similarity + the benchmark plot
    assert len(sources) == 5
    for text in ("Training", "12.34%", "15.500", "Spearman correlation with BLOSUM62", "Attention maps: BPT1_BOVIN", "bench plot"):
        assert text in page, text
    _fails_cleanly(capsys, ["report", "--run", str(tmp_path / "nothing")], "not a training run directory")
    _fails_cleanly(capsys, ["report", "--run", str(run_dir), "--no-evaluate", "--analysis", str(tmp_path / "none")], "no analysis folder")


def test_bad_input_is_one_line_before_any_work(tmp_path, run_dir, fasta, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    maps = ["analyze", "attention-maps", "--checkpoint", str(run_dir)]
    for argv in (maps, ["analyze", "similarity", "--checkpoint", str(run_dir), "--fasta", str(fasta), "--quiet"],
                 ["analyze", "approximation", "--samples", "1", "--length", "16", "--features", "4", "--quiet"]):
        _fails_cleanly(capsys, [*argv, "--out", str(afile)], "afile is a file: --out takes a folder")
    _fails_cleanly(capsys, ["report", "--run", str(run_dir), "--no-evaluate", "--out", str(afile / "r.html")], "afile")
    _fails_cleanly(capsys, [*maps, "--sequence", "", "--out", str(tmp_path / "o")], "empty")
    _fails_cleanly(capsys, [*maps, "--name", "a/b", "--out", str(tmp_path / "o")], "path separators")
    approx = ["analyze", "approximation", "--samples", "1", "--length", "16", "--features", "4", "--quiet", "--out", str(tmp_path / "a")]
    _fails_cleanly(capsys, [*approx, "--fasta", str(fasta)], "give --checkpoint too")
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    _fails_cleanly(capsys, [*approx, "--checkpoint", str(run_dir), "--fasta", str(empty)], "holds no sequences")
    unknown = tmp_path / "x.fa"
    unknown.write_text(">a\nXXXX\n")
    _fails_cleanly(capsys, ["analyze", "similarity", "--checkpoint", str(run_dir), "--fasta", str(unknown), "--quiet",
                            "--out", str(tmp_path / "s")], "amino-acid pairs have a defined similarity")


@pytest.mark.parametrize("name,content,message", [
    ("approximation.json", "{bad", "approximation.json is not valid JSON"),
    ("approximation.json", "{}", "holds no results"),
    ("approximation.json", '{"random": {}}', "approximation.json is not an output of `protein-performer analyze`"),
    ("attention_maps_x.json", '{"name": "x"}', "attention_maps_x.json is not an output"),
    ("similarity_x.json", "[1, 2]", "similarity_x.json holds list, not a JSON object"),
])
def test_report_names_a_malformed_analysis_file(tmp_path, run_dir, capsys, name, content, message):
    (tmp_path / name).write_text(content)
    _fails_cleanly(capsys, ["report", "--run", str(run_dir), "--no-evaluate", "--analysis", str(tmp_path),
                            "--out", str(tmp_path / "r.html")], message)


def test_report_names_a_malformed_metrics_log(tmp_path, run_dir, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text((run_dir / "config.json").read_text())
    for content in ('{"loss": 1.0}\n', "5\n"):
        (run / "metrics.jsonl").write_text(content)
        _fails_cleanly(capsys, ["report", "--run", str(run), "--no-evaluate"], "metrics.jsonl")


@pytest.mark.slow
def test_cli_run_as_a_module_reports_analysis_errors_in_one_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "protein_performer.cli", "report", "--run", str(tmp_path / "nope")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "not a training run directory" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_report_replaces_its_own_page_but_not_a_users_file(tmp_path, run_dir, capsys):
    notes = tmp_path / "notes.html"
    notes.write_text("<html>my notes</html>\n")
    _fails_cleanly(capsys, ["report", "--checkpoint", str(run_dir), "--no-evaluate", "--out", str(notes)],
                   "already exists and was not written by protein-performer")
    assert notes.read_text() == "<html>my notes</html>\n"
    assert main(["report", "--checkpoint", str(run_dir), "--no-evaluate", "--out", str(notes), "--overwrite"]) == 0
    page = notes.read_text()
    assert '<meta name="generator" content="protein-performer">' in page
    notes.write_text(page.replace("</body>", "<p>old</p></body>"))
    assert main(["report", "--run", str(run_dir), "--no-evaluate", "--out", str(notes)]) == 0  # its own page: replaced
    assert "<p>old</p>" not in notes.read_text()


def test_analyses_record_their_weights_and_report_flags_other_weights(tmp_path, run_dir, capsys):
    from protein_performer.analysis.report import AnalysisMismatchWarning, write_report
    from protein_performer.inference import load
    from protein_performer.inference.embed_h5 import model_fingerprint

    same, other = tmp_path / "same", tmp_path / "other"
    assert main(["analyze", "attention-maps", "--checkpoint", str(run_dir), "--out", str(same), "--window", "16"]) == 0
    recorded = json.loads((same / "attention_maps_BPT1_BOVIN.json").read_text())["weights"]
    assert recorded == {"checkpoint": str(run_dir), "fingerprint": model_fingerprint(load(run_dir)), "step": None}
    assert main(["report", "--checkpoint", str(run_dir), "--no-evaluate", "--analysis", str(same), "--out", str(tmp_path / "a.html")]) == 0
    assert "warning" not in capsys.readouterr().err and "mismatch" not in (tmp_path / "a.html").read_text().split("</style>")[1]

    torch.manual_seed(1)
    model = tmp_path / "model"
    config = preset("tiny", d_model=32, num_heads=2, d_ff=64, num_features=16, dropout=0.0)
    save_weights(PerformerLM(config), config, model)
    assert main(["analyze", "attention-maps", "--checkpoint", str(model), "--out", str(other), "--window", "16"]) == 0
    capsys.readouterr()
    assert main(["report", "--checkpoint", str(run_dir), "--no-evaluate", "--analysis", str(other), "--out", str(tmp_path / "b.html")]) == 0
    err = capsys.readouterr().err
    assert "protein-performer: warning: attention_maps_BPT1_BOVIN.json was made from other weights" in err, err
    assert 'class="mismatch"' in (tmp_path / "b.html").read_text()
    with pytest.warns(AnalysisMismatchWarning, match="other weights"):
        write_report(run_dir, tmp_path / "c.html", analysis=other, evaluate_run=False)
    # an analysis that records no weights (written by an older version) is flagged too
    path = other / "attention_maps_BPT1_BOVIN.json"
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "weights"}))
    with pytest.warns(AnalysisMismatchWarning, match="does not record the weights"):
        write_report(run_dir, tmp_path / "c.html", analysis=other, evaluate_run=False)
