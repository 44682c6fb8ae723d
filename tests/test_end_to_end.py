"""A tiny end-to-end run through the real entry points: shapes -> train -> caption -> report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import caption
import train
from eval import bleu_report
from nic import runs
from preprocess.shapes import generate_shapes
from tests.conftest import DATA

LENGTH_PENALTY = 2.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = root / "shapes"
    generate_shapes(data, n_train=60, n_val=10, n_test=10, image_size=64, seed=3, progress=False)
    train.main([
        f"--data.root={data}", "--data.image_size=64", "--data.min_count=1",
        "--decoder.embed_dim=32", "--decoder.hidden_dim=32", "--train.epochs=2", "--train.batch_size=32",
        "--train.lr=0.005", f"--train.out_dir={root / 'runs'}", "--train.name=e2e", "--eval.beam_sizes=[1,3]",
        # a non-zero length penalty (what caption.py must decode with too) and an exact feature cache, so
        # that the report's features equal the ones caption.py computes from the image files
        f"--eval.length_penalty={LENGTH_PENALTY}", "--encoder.feature_dtype=float32", "--quiet",
    ])
    return root, root / "runs" / "e2e"


def test_train_writes_a_complete_run(trained, capsys):
    root, run_dir = trained
    for name in ("config.yaml", "vocab.json", "metrics.jsonl", "steps.jsonl", "env.json", "last.pt", "best.pt",
                 "test_report.json"):
        assert (run_dir / name).exists(), name
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert metrics[1]["train_loss"] < metrics[0]["train_loss"]
    report = json.loads((run_dir / "test_report.json").read_text())
    assert [r["beam"] for r in report["results"]] == [1, 3]
    row = report["results"][0]
    assert row["images"] == 10 and len(row["captions"]) == 10
    assert 0 <= row["bleu"]["BLEU-4"] <= 1 and 0 < row["distinct"] <= 1
    assert row["shapes"] is not None and "color_shape" in row["shapes"]
    assert report["human"]["bleu"]["BLEU-1"] > 0
    choice = report["relation_choice"]  # forced-choice spatial relations, from the store's ground truth
    assert 0 < choice["images"] <= 10 and choice["pairs"] >= choice["images"]
    assert 0 <= choice["accuracy"] <= 1


def test_score_is_the_log_probability_search_reports(trained):
    from nic.captioner import Captioner

    _, run_dir = trained
    captioner = Captioner.from_checkpoint(run_dir / "best.pt")
    pooled = torch.randn(3, captioner.encoder.feature_dim)
    for method in ("greedy", "beam"):
        best = [c[0] for c in captioner.decode(pooled, method=method, beam_size=4, max_len=8)]
        finished = [i for i, c in enumerate(best) if c.finished]
        assert finished
        scores = captioner.score(pooled[finished], None, [best[i].words for i in finished])
        assert scores.tolist() == pytest.approx([best[i].logprob for i in finished], abs=1e-4)
    # a caption the model would not say scores lower than its own (finished) greedy caption
    greedy = captioner.decode(pooled, method="greedy", max_len=8)
    i = next(i for i, c in enumerate(greedy) if c[0].finished)
    other = captioner.score(pooled[i:i + 1], None, [["star"] * 6])
    assert other.item() < captioner.score(pooled[i:i + 1], None, [greedy[i][0].words]).item()


def test_caption_cli_on_any_image(trained, tmp_path, capsys):
    _, run_dir = trained
    Image.fromarray(np.full((30, 50), 200, np.uint8)).save(tmp_path / "gray.png")
    Image.new("RGBA", (40, 40), (255, 0, 0, 128)).save(tmp_path / "rgba.png")
    caption.main(["--img", str(DATA / "cat.jpg"), str(tmp_path), "--checkpoint", str(run_dir), "--beam", "5",
                  "--nbest", "2"])
    out = capsys.readouterr().out
    assert out.count(":\n") == 3  # cat + two images of the folder
    logprob_lines = [line for line in out.splitlines() if line.startswith("  ")]
    assert len(logprob_lines) == 6
    values = [float(line.split()[0]) for line in logprob_lines]
    assert values[0] >= values[1] and all(v <= 0 for v in values)
    caption.main(["--img", str(DATA / "espresso.jpg"), "--checkpoint", str(run_dir / "best.pt"), "--method", "greedy"])
    assert capsys.readouterr().out.startswith(str(DATA / "espresso.jpg"))
    with pytest.raises(SystemExit, match="no such file"):
        caption.main(["--img", str(tmp_path / "nope.jpg"), "--checkpoint", str(run_dir)])


def test_bleu_report_cli_and_runs_table(trained, tmp_path, capsys):
    _, run_dir = trained
    out = tmp_path / "r.json"
    bleu_report.main(["--checkpoint", str(run_dir / "best.pt"), "--beam", "2", "--limit", "4", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| beam 2 |" in printed and "human" in printed
    assert json.loads(out.read_text())["results"][0]["images"] == 4
    runs.main([str(run_dir.parent)])
    assert "| e2e |" in capsys.readouterr().out


def test_an_ensemble_through_the_report_and_caption_py(trained, tmp_path, capsys):
    """Several --checkpoint: one search over their mean distribution. The model with itself decodes as the
    model alone; best + last is a real ensemble that both entry points run and name."""
    root, run_dir = trained
    best, last = str(run_dir / "best.pt"), str(run_dir / "last.pt")
    common = ["--beam", "3", "--limit", "6", "--metrics", "bleu", "--quiet"]
    alone = bleu_report.main(["--checkpoint", best, *common])
    twice = bleu_report.main(["--checkpoint", best, best, *common])
    assert twice["checkpoint"] == [best, best] and alone["checkpoint"] == best
    assert twice["results"][0]["captions"] == alone["results"][0]["captions"]
    pair = bleu_report.main(["--checkpoint", best, last, *common, "--html", str(tmp_path / "r.html")])
    assert pair["results"][0]["images"] == 6
    assert f"ensemble of {best}, {last}" in (tmp_path / "r.html").read_text()
    capsys.readouterr()
    caption.main(["--img", str(DATA / "cat.jpg"), "--checkpoint", best, last, "--beam", "3"])
    assert capsys.readouterr().out.startswith(f"{DATA / 'cat.jpg'}: ")


def test_an_exported_ensemble_is_one_file_that_decodes_as_its_members(trained, tmp_path):
    """export best + last -> one weights_only file; float32 decodes exactly as the two checkpoints do, int8
    (a quarter of the size) within rounding of the log-probs."""
    from nic.captioner import Captioner
    from nic.checkpoint import export_model, load_checkpoint, main
    from nic.ensemble import EnsembleDecoder

    _, run_dir = trained
    pair = Captioner.from_checkpoints([run_dir / "best.pt", run_dir / "last.pt"])
    images = torch.from_numpy(np.stack([np.asarray(Image.open(DATA / name).convert("RGB").resize((64, 64)))
                                        for name in ("cat.jpg", "espresso.jpg")])).permute(0, 3, 1, 2)
    expected = pair.caption_images(images, beam_size=3)
    full = export_model([run_dir, run_dir / "last.pt"], tmp_path / "pair.pt")
    assert len(load_checkpoint(full)["members"]) == 1
    loaded = Captioner.from_checkpoint(full)
    assert isinstance(loaded.decoder, EnsembleDecoder)
    got = loaded.caption_images(images, beam_size=3)
    assert [c[0].text for c in got] == [c[0].text for c in expected]
    assert [c[0].logprob for c in got] == pytest.approx([c[0].logprob for c in expected], abs=1e-5)
    assert main(["export", str(run_dir / "best.pt"), str(run_dir / "last.pt"), str(tmp_path / "q.pt"), "--int8"]) == 0
    assert (tmp_path / "q.pt").stat().st_size < 0.4 * full.stat().st_size
    quantized = Captioner.from_checkpoint(tmp_path / "q.pt")
    scores = quantized.score(*pair.features(images), [c[0].words for c in expected])
    assert scores.tolist() == pytest.approx([c[0].logprob for c in expected], abs=0.05)


def test_caption_cli_prints_the_captions_the_report_scored(trained, capsys):
    """caption.py decodes with the checkpoint's settings (here length penalty 2), as the report did."""
    from nic.captioner import Captioner
    from nic.store import StoreReader, store_path

    root, run_dir = trained
    report = json.loads((run_dir / "test_report.json").read_text())
    scored = next(r for r in report["results"] if r["beam"] == 3)  # caption.py's default: the largest beam
    captioner = Captioner.from_checkpoint(run_dir / "best.pt")
    assert captioner.settings.length_penalty == LENGTH_PENALTY and captioner.settings.beam_size == 3
    store = StoreReader(store_path(captioner.config.data.resolved_store_dir(), "test"))
    files = [str(root / "shapes" / name) for name in store.filenames()]
    caption.main(["--img", *files, "--checkpoint", str(run_dir)])
    printed = dict(line.rsplit(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert [printed[f] for f in files] == scored["captions"]
    # the test means something: without the penalty (the old caption.py default) the captions differ
    caption.main(["--img", *files, "--checkpoint", str(run_dir), "--length-penalty", "0"])
    plain = dict(line.rsplit(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert [plain[f] for f in files] != scored["captions"]
