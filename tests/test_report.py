"""The evaluation suite: results files, reference files, toolkit metrics, the HTML report, the CLI."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eval import bleu_report, decode, metrics
from eval.coco_tokenize import coco_tokenize
from eval.html_report import best_and_worst
from eval.results import InputFormatError, match, read_references, read_results, write_results
from nic.captioner import Captioner
from nic.captions_json import CaptionsFormatError, load_captions_json
from nic.checkpoint import load_checkpoint, save_checkpoint

HAVE_JAVA = shutil.which("java") is not None

# Test-split images of the fixture: cocoid -> reference captions (1 to 5, punctuation, case, clitics, unicode).
TEST_REFS = {
    101: ["A man riding a wave on top of a surfboard.", "A surfer rides a big wave!", "Man's surfboard on a wave.",
          "A person surfing in the ocean", "Someone is riding a wave, on a surfboard."],
    102: ["Two dogs playing with a frisbee in the grass."],  # a single reference
    103: ["A café with naïve decorations.", "A small café on a street corner.", "People sitting outside a café."],
    104: ["A red double-decker bus on a city street.", "A bus driving down the road.",
          "A large red bus in traffic.", "The bus is red; it's on the street."],
    105: ["A plate of food with broccoli and rice.", "A plate with rice, broccoli and meat.",
          "Dinner on a white plate."],
    106: ["A cat sleeping on a laptop keyboard.", "A cat lies on a laptop."],
    107: ["A giraffe standing next to a tree.", "A tall giraffe eating leaves from a tree.",
          "Giraffe near trees at the zoo.", "A giraffe in its enclosure.", "The giraffe is eating."],
    108: ["A kitchen with a stove and a refrigerator.", "An empty kitchen."],
}
RESULTS = {
    101: "a man riding a wave on a surfboard",
    102: "a dog playing with a frisbee",
    103: "a cafe on a street",  # no accent: must not match "café"
    104: "a red bus driving down a street",
    105: "",  # an empty caption scores 0 and only adds reference length
    106: "a cat laying on a laptop",
    107: "a giraffe standing next to a tree",
    # 108 has no result; 900 and 901 have no references
    900: "a man on a skateboard",
    901: "a bowl of fruit",
}


def _toolkit_bleu(hyps: dict, refs: dict) -> list[float]:
    """pycocoevalcap's Bleu(4) on our tokenization of the same captions (what the report must equal)."""
    bleu = pytest.importorskip("pycocoevalcap.bleu.bleu")
    gts = {k: [" ".join(coco_tokenize(r)) for r in refs[k]] for k in hyps}
    res = {k: [" ".join(coco_tokenize(hyps[k]))] for k in hyps}
    score, _ = bleu.Bleu(4).compute_score(gts, res, verbose=0)
    return score


def _scored() -> tuple[dict, dict]:
    ids = [k for k in TEST_REFS if k in RESULTS]
    return {k: RESULTS[k] for k in ids}, {k: TEST_REFS[k] for k in ids}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A Karpathy split file, the equivalent COCO captions file, a results file and the images."""
    images, coco_images, annotations = [], [], []
    (tmp_path / "imgs").mkdir()
    rng = np.random.default_rng(0)
    entries = [(k, "test", refs) for k, refs in TEST_REFS.items()]
    entries += [(201, "train", ["A man riding a wave on a surfboard.", "A dog."]),
                (202, "restval", ["A cat laying on a laptop."]), (203, "val", ["A bowl of fruit."])]
    for i, (cocoid, split, refs) in enumerate(entries):
        name = f"{cocoid}.jpg"
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "imgs" / name)
        images.append({"filepath": "imgs", "filename": name, "imgid": i, "cocoid": cocoid, "split": split,
                       "sentences": [{"raw": r, "tokens": r.lower().split()} for r in refs]})
        if split == "test":
            coco_images.append({"id": cocoid, "file_name": f"imgs/{name}"})
            annotations += [{"image_id": cocoid, "id": len(annotations), "caption": r} for r in refs]
    out = {"karpathy": tmp_path / "dataset_tiny.json", "coco": tmp_path / "captions_test.json",
           "results": tmp_path / "results.json", "root": tmp_path}
    out["karpathy"].write_text(json.dumps({"dataset": "tiny", "images": images}), encoding="utf-8")
    out["coco"].write_text(json.dumps({"images": coco_images, "annotations": annotations}), encoding="utf-8")
    write_results(out["results"], list(RESULTS), list(RESULTS.values()))
    return out


# --------------------------------------------------------------------------- results-file scoring


@pytest.mark.parametrize("kind", ["karpathy", "coco"])
def test_results_file_bleu_equals_the_toolkit(files, kind, tmp_path, capsys):
    split = ["--split", "test"] if kind == "karpathy" else []
    out = tmp_path / "report.json"
    bleu_report.main(["--results", str(files["results"]), "--references", str(files[kind]), *split,
                      "--metrics", "bleu", "--out", str(out)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    row = report["results"][0]
    hyps, refs = _scored()
    expected = _toolkit_bleu(hyps, refs)
    assert [row["bleu"][f"BLEU-{n}"] for n in range(1, 5)] == pytest.approx(expected, abs=1e-6)
    assert row["images"] == 7 and row["image_ids"] == list(hyps)
    assert row["captions"][4] == "" and row["per_image"]["BLEU-1"][4] == 0.0  # empty caption
    m = report["matching"]
    assert m["scored"] == 7
    assert m["results_without_references"] == {"count": 2, "ids": [900, 901], "truncated": False}
    assert m["references_without_results"] == {"count": 1, "ids": [108], "truncated": False}
    assert "2 result(s) without references, not scored: 900, 901" in printed
    assert "1 image(s) with references but no caption, not scored: 108" in printed
    assert report["references"]["format"] == kind and report["tokenizer"]["name"] == "coco"
    assert report["human"]["images"] == 6  # 102 has a single reference: no human row entry
    if kind == "karpathy":  # train + restval references: 201's first caption is 101's result verbatim
        assert row["novelty"] == pytest.approx(5 / 7)
    else:
        assert row["novelty"] is None


def test_karpathy_reader_ids_splits_and_meta(files):
    refs = read_references(files["karpathy"], split="test")
    assert list(refs.captions) == list(TEST_REFS) and refs.files[101] == "imgs/101.jpg"
    assert refs.train_captions == ["A man riding a wave on a surfboard.", "A dog.", "A cat laying on a laptop."]
    everything = read_references(files["karpathy"])
    assert set(everything.captions) == {*TEST_REFS, 201, 202, 203} and everything.train_captions is None
    assert set(read_references(files["karpathy"], split="train").captions) == {201, 202}  # restval is train
    coco = read_references(files["coco"])
    assert coco.captions == TEST_REFS and coco.files[102] == "imgs/102.jpg"


def test_match_counts_both_sides():
    m = match({1: "a", 2: "b", "3": "c"}, {1: ["x"], 3: ["y"], 4: []})
    assert m.ids == [1] and m.results_without_references == [2, "3"] and m.references_without_results == [3]


def test_strict_and_nothing_matched(files, tmp_path):
    with pytest.raises(SystemExit, match=r"--strict: 2 result\(s\) without references \[900, 901\]"):
        bleu_report.main(["--results", str(files["results"]), "--references", str(files["coco"]),
                          "--metrics", "bleu", "--strict"])
    strings = tmp_path / "strings.json"
    write_results(strings, ["101", "102"], ["a man", "a dog"])
    with pytest.raises(SystemExit, match="the results' image ids are str, the references' int"):
        bleu_report.main(["--results", str(strings), "--references", str(files["coco"]), "--metrics", "bleu"])


BAD_RESULTS = [
    ("{not json", "not valid JSON"),
    ('{"annotations": []}', "expected a list"),
    ('[["a", "b"]]', r"\[0\] must be an object"),
    ('[{"caption": "a dog"}]', r"\[0\] has no 'image_id' field"),
    ('[{"image_id": 1}]', r"\[0\] has no 'caption' field"),
    ('[{"image_id": 1, "caption": null}]', r"\[0\]\.caption must be a string"),
    ('[{"image_id": 1.5, "caption": "x"}]', r"\[0\]\.image_id must be an integer or a string"),
    ('[{"image_id": true, "caption": "x"}]', r"\[0\]\.image_id must be an integer or a string"),
    ('[{"image_id": 1, "caption": "x"}, {"image_id": 1, "caption": "y"}]', "more than once"),
]
BAD_REFERENCES = [
    ("[]", "not a references file"),
    ('{"images": [{"cocoid": 1, "sentences": [{"text": "x"}]}]}', r"images\[0\]\.sentences\[0\] needs 'raw'"),
    ('{"images": [{"cocoid": "a", "sentences": "x"}]}', r"images\[0\]\.sentences must be a list"),
    ('{"images": [{"cocoid": 1.0, "sentences": []}]}', r"images\[0\]\.cocoid must be an integer"),
    ('{"images": [{"imgid": 1, "sentences": []}, {"imgid": 1, "sentences": []}]}', "appears twice"),
    ('{"images": [], "annotations": {}}', "'annotations' must be a list"),
    ('{"images": [], "annotations": [{"image_id": 1}]}', r"annotations\[0\] has no 'caption' field"),
    ('{"images": [], "annotations": [{"image_id": 1, "caption": 3}]}', r"annotations\[0\]\.caption must be"),
    ('{"images": [{"file_name": "x.jpg"}], "annotations": []}', r"images\[0\] must be an object with an 'id'"),
]


@pytest.mark.parametrize("text, message", BAD_RESULTS)
def test_malformed_results_name_the_file_and_field(tmp_path, text, message):
    path = tmp_path / "my_results.json"
    path.write_text(text)
    with pytest.raises(InputFormatError, match=message) as e:
        read_results(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("text, message", BAD_REFERENCES)
def test_malformed_references_name_the_file_and_field(tmp_path, text, message):
    path = tmp_path / "my_refs.json"
    path.write_text(text)
    with pytest.raises(InputFormatError, match=message) as e:
        read_references(path)
    assert str(path) in str(e.value)


def test_cli_errors_are_one_line_naming_the_file(files, tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('[{"image_id": 1}]')
    with pytest.raises(SystemExit, match=r"error: .*broken\.json: \[0\] has no 'caption' field"):
        bleu_report.main(["--results", str(bad), "--references", str(files["coco"])])
    with pytest.raises(SystemExit, match=r"captions_test\.json: a COCO captions file holds one split already"):
        bleu_report.main(["--results", str(files["results"]), "--references", str(files["coco"]), "--split", "test"])
    with pytest.raises(SystemExit, match="--results needs --references"):
        bleu_report.main(["--results", str(files["results"])])
    with pytest.raises(SystemExit, match="nope.json: results file not found"):
        bleu_report.main(["--results", str(tmp_path / "nope.json"), "--references", str(files["coco"])])
    with pytest.raises(SystemExit, match="unknown metric 'bleu5'"):
        bleu_report.main(["--results", str(files["results"]), "--references", str(files["coco"]),
                          "--metrics", "bleu5"])


# --------------------------------------------------------------------------- the shared caption-file reader


def test_shared_reader_reads_karpathy_and_coco_to_the_same_references(files):
    karpathy = load_captions_json(files["karpathy"])
    coco = load_captions_json(files["coco"])
    assert (karpathy.layout, coco.layout) == ("karpathy", "coco")
    from_karpathy = {im.image_id: im.texts for im in karpathy.images() if im.merged_split == "test"}
    from_coco = {im.image_id: im.texts for im in coco.images()}
    assert from_karpathy == from_coco == TEST_REFS
    # the same file names, the same image ids; restval is train once merged; other keys are metadata
    images = list(load_captions_json(files["karpathy"]).images(require=("filename", "split"), integer_ids=True))
    assert images[0].file == "imgs/101.jpg" and images[0].meta == {}
    assert [(im.split, im.merged_split) for im in images if im.image_id == 202] == [("restval", "train")]
    assert {im.image_id: im.file for im in load_captions_json(files["coco"]).images()}[102] == "imgs/102.jpg"


def test_shared_reader_ids_tokens_and_meta(tmp_path):
    path = tmp_path / "dataset_x.json"
    path.write_text(json.dumps({"images": [
        {"filename": "a.jpg", "split": "train", "sentences": [{"tokens": ["A", "dog"]}], "objects": [1]},  # no id
        {"filename": "b.jpg", "split": "val", "imgid": 7, "sentences": [{"raw": "A cat.", "tokens": ["a", "cat"]}]},
        {"filename": "c.jpg", "split": "test", "imgid": 8, "cocoid": "c9"},  # cocoid first; no sentences
    ]}))
    images = list(load_captions_json(path).images())
    assert [im.image_id for im in images] == [0, 7, "c9"]  # position, imgid, cocoid
    assert [im.texts for im in images] == [["A dog"], ["A cat."], []]
    assert images[0].sentences[0].raw is None and images[0].sentences[0].tokens == ("A", "dog")
    assert images[1].sentences[0].tokens is None  # raw given: the tokens are not kept
    assert images[0].meta == {"objects": [1]} and images[1].meta == {}


BAD_CAPTION_FILES = [  # (file content, reader options, message): every message names the file and the field
    ("{", {}, r"malformed JSON \(not valid JSON at line 1"),
    ('{"pictures": []}', {}, "not a caption file: expected a Karpathy split file"),
    ('{"images": [{"filename": "a.jpg", "split": "dev"}]}', {}, r"images\[0\]: unknown split 'dev'"),
    ('{"images": [{"filename": 3}]}', {}, r"images\[0\]\.filename must be a string"),
    ('{"images": [{"filepath": ["x"], "filename": "a.jpg"}]}', {}, r"images\[0\]\.filepath must be a string"),
    ('{"images": [{"filename": "a.jpg", "sentences": [{"raw": "x"}, {"tokens": [1]}]}]}', {},
     r"images\[0\]\.sentences\[1\] needs 'raw' \(a string\) or 'tokens' \(a list of strings\)"),
    ('{"images": [{"split": "test"}]}', {"require": ("filename", "split")},
     r"images\[0\]: expected an object with 'filename' \(a string\) and 'split' \(no 'filename'\)"),
    ('{"images": [{"imgid": "7"}]}', {"integer_ids": True}, r"images\[0\]\.imgid must be an integer, got '7'"),
    ('{"images": [{"filename": "a.jpg"}, null]}', {}, r"images\[1\] must be an object, got NoneType"),
    ('{"images": [{"id": "x"}], "annotations": [{"image_id": [1], "caption": "a"}]}', {},
     r"annotations\[0\]\.image_id must be an integer or a string"),
    ('{"annotations": [{"image_id": 1, "caption": "a"}], "images": [{"id": 1.5}]}', {},
     r"images\[0\]\.id must be an integer or a string"),
]


@pytest.mark.parametrize("text, options, message", BAD_CAPTION_FILES)
def test_shared_reader_errors_name_the_file_and_field(tmp_path, text, options, message):
    path = tmp_path / "my_captions.json"
    path.write_text(text)
    with pytest.raises(CaptionsFormatError, match=message) as e:
        list(load_captions_json(path).images(**options))
    assert str(e.value).startswith(f"{path}: ")
    assert CaptionsFormatError is InputFormatError  # the report catches the reader's errors as its own


def test_shared_reader_layout_checks(files, tmp_path):
    with pytest.raises(CaptionsFormatError, match="COCO annotations file.*dataset_coco.json"):
        load_captions_json(files["coco"], expect="karpathy")
    with pytest.raises(FileNotFoundError, match=r"nope\.json: Karpathy split file not found \(get it\)"):
        load_captions_json(tmp_path / "nope.json", what="Karpathy split file", not_found_hint=" (get it)")


# --------------------------------------------------------------------------- toolkit metrics


def test_toolkit_metrics_equal_pycocoevalcap():
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    hyps, refs = _scored()
    keys = list(hyps)
    h = [coco_tokenize(hyps[k]) for k in keys]
    r = [[coco_tokenize(x) for x in refs[k]] for k in keys]
    names = ["rouge", "cider"] + (["meteor"] if HAVE_JAVA else [])
    ours = metrics.compute_metrics(h, r, names, raise_errors=True)
    gts = {i: [" ".join(x) for x in r[i]] for i in range(len(keys))}
    res = {i: [" ".join(h[i])] for i in range(len(keys))}
    classes = {"ROUGE-L": Rouge, "CIDEr": Cider}
    if HAVE_JAVA:
        from pycocoevalcap.meteor.meteor import Meteor

        classes["METEOR"] = Meteor
    for key, cls in classes.items():
        score, per_image = cls().compute_score(gts, res)
        assert ours.corpus[key] == pytest.approx(score, abs=1e-6), key
        assert ours.per_image[key] == pytest.approx(list(per_image), abs=1e-6), key
    assert ours.per_image["ROUGE-L"][4] == 0.0 and ours.per_image["CIDEr"][4] == 0.0  # the empty caption


def test_metric_selection_and_reasons(monkeypatch):
    ran, skipped = metrics.select_metrics(["cider"])
    assert ran == ["bleu", "cider"] and set(skipped) == {"meteor", "rouge", "spice"}
    with pytest.raises(ValueError, match="unknown metric 'cidr'"):
        metrics.select_metrics(["cidr"])
    pytest.importorskip("pycocoevalcap")
    if not all(p.exists() for p in metrics.spice_jars()):
        assert "stanford-corenlp-3.6.0" in metrics.metric_unavailable("spice")
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    ran, skipped = metrics.select_metrics(None)
    assert ran == ["bleu", "rouge", "cider"] and "no Java runtime" in skipped["meteor"]
    with pytest.raises(ValueError, match="'meteor' cannot run here: no Java runtime"):
        metrics.select_metrics(["meteor"])


def test_a_failing_metric_is_reported_not_run(files, monkeypatch):
    def broken(name, gts, res):
        raise RuntimeError("java crashed")

    monkeypatch.setattr(metrics, "_toolkit_score", broken)
    monkeypatch.setattr(metrics, "metric_unavailable", lambda name: None)
    report = bleu_report.evaluate_results(files["results"], files["coco"])  # default: every available metric
    assert report["metrics"]["ran"] == ["bleu"]
    assert report["metrics"]["not_run"]["cider"] == "failed: RuntimeError: java crashed"
    with pytest.raises(RuntimeError, match="java crashed"):  # asked for by name: an error
        bleu_report.evaluate_results(files["results"], files["coco"], metrics=["cider"])


@pytest.mark.skipif(not HAVE_JAVA, reason="java is not installed")
def test_ptb_java_tokenizer_agrees_with_the_default(files, tmp_path):
    pytest.importorskip("pycocoevalcap")
    reports = {}
    for tokenizer in ("coco", "ptb-java"):
        reports[tokenizer] = bleu_report.evaluate_results(files["results"], files["karpathy"], split="test",
                                                          tokenizer=tokenizer, metrics=["bleu", "rouge", "cider"])
    a, b = (reports[t]["results"][0] for t in ("coco", "ptb-java"))
    assert reports["ptb-java"]["tokenizer"]["name"] == "ptb-java"
    assert a["bleu"] == b["bleu"] and a["scores"] == pytest.approx(b["scores"], abs=1e-12)
    assert a["per_image"] == b["per_image"]


# --------------------------------------------------------------------------- HTML


def _check_self_contained(page: str) -> None:
    assert "http://" not in page and "https://" not in page and 'src="file' not in page
    assert "<script" not in page and "<link" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith(("data:image/jpeg;base64,", "data:image/png;base64,")) for s in sources)
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', page))


def test_html_report_is_self_contained(files, tmp_path):
    html = tmp_path / "report.html"
    bleu_report.main(["--results", str(files["results"]), "--references", str(files["karpathy"]), "--split", "test",
                      "--metrics", "bleu,rouge", "--html", str(html), "--html-samples", "5",
                      "--image-root", str(files["root"])])
    page = html.read_text(encoding="utf-8")
    _check_self_contained(page)
    assert page.count('class="card"') == 5 and page.count("data:image/jpeg;base64,") == 5
    assert "Best 3 images" in page and "Worst 2 images" in page
    assert "<th>BLEU&#8209;4</th>" in page and "<th>ROUGE&#8209;L</th>" in page
    assert "2 result(s) without references" in page
    # every image when there are fewer than asked for; a missing --image-root is said, not an error
    bleu_report.main(["--results", str(files["results"]), "--references", str(files["coco"]), "--metrics", "bleu",
                      "--html", str(html)])
    page = html.read_text(encoding="utf-8")
    assert page.count('class="card"') == 7 and "pass --image-root" in page and "(empty caption)" in page
    assert "café" in page  # unicode kept as is


def test_best_and_worst():
    scores = [[0.5], [0.9], [0.1], [0.7], [0.3]]
    assert best_and_worst(scores, 4) == ([1, 3], [2, 4])
    assert best_and_worst(scores, 3) == ([1, 3], [2])
    assert best_and_worst(scores, 50) == ([1, 3, 0], [2, 4])
    assert best_and_worst(scores, 0) == ([], [])


# --------------------------------------------------------------------------- a tiny trained checkpoint


@pytest.fixture(scope="module")
def attention_run(tmp_path_factory):
    import train
    from preprocess.shapes import generate_shapes

    root = tmp_path_factory.mktemp("report_e2e")
    data = root / "shapes"
    generate_shapes(data, n_train=40, n_val=6, n_test=8, image_size=64, seed=5, progress=False)
    train.main([
        f"--data.root={data}", "--data.image_size=64", "--data.min_count=1", "--decoder.type=attention",
        "--decoder.embed_dim=16", "--decoder.hidden_dim=16", "--decoder.attention_dim=16", "--encoder.grid_size=3",
        "--train.epochs=1", "--train.batch_size=32", "--train.lr=0.01", f"--train.out_dir={root / 'runs'}",
        "--train.name=att", "--eval.max_len=8", "--quiet", "--no-test",
    ])
    return root, data, root / "runs" / "att" / "best.pt"


def test_checkpoint_report_html_results_out_round_trip(attention_run, tmp_path, capsys):
    root, data, ckpt = attention_run
    html, caps = tmp_path / "r.html", tmp_path / "caps.json"
    report = bleu_report.main(["--checkpoint", str(ckpt), "--beam", "1", "2", "--html", str(html),
                               "--html-samples", "4", "--html-attention", "1", "--results-out", str(caps),
                               "--out", str(tmp_path / "r.json"), "--quiet"])
    assert [r["beam"] for r in report["results"]] == [1, 2] and report["results"][0]["images"] == 8
    assert report["references"]["format"] == "store" and report["matching"]["scored"] == 8
    assert set(report["metrics"]["ran"]) >= {"bleu", "rouge", "cider"}  # default: all available
    assert report["results"][0]["shapes"] is not None and "novelty" in report["results"][0]
    assert "| beam 1 |" in capsys.readouterr().out
    page = html.read_text(encoding="utf-8")
    _check_self_contained(page)
    assert page.count('class="card"') == 4 and page.count("data:image/png;base64,") == 2  # 1 per section
    assert "Best 2 images by beam 2 BLEU-4" in page  # sorted by the largest beam
    # The written results file scored against the dataset's raw captions = the checkpoint scored against them;
    # on shapes the store's references re-normalised give exactly the same scoring tokens as the raw captions.
    beam2 = caps.with_name("caps.beam2.json")
    assert json.loads(beam2.read_text())[0].keys() == {"image_id", "caption"}
    dataset = data / "dataset_shapes.json"
    via_file = bleu_report.evaluate_results(beam2, dataset, split="test", metrics=["bleu"])
    via_ckpt = bleu_report.evaluate_checkpoint(ckpt, beam_sizes=[2], references=dataset, metrics=["bleu"],
                                               progress=False)
    assert via_ckpt["references"]["format"] == "karpathy" and via_ckpt["matching"]["scored"] == 8
    assert via_file["results"][0]["bleu"] == via_ckpt["results"][0]["bleu"] == report["results"][1]["bleu"]
    assert via_file["results"][0]["shapes"] == via_ckpt["results"][0]["shapes"]


# --------------------------------------------------------------------------- decoding settings


def _with_length_penalty(ckpt: Path, penalty: float, out: Path) -> Path:
    """A copy of ``ckpt`` whose config says ``eval.length_penalty = penalty`` (same weights)."""
    data = load_checkpoint(ckpt)
    data["config"]["eval"]["length_penalty"] = penalty
    save_checkpoint(out, {k: v for k, v in data.items() if k not in ("format", "version")})
    return out


def test_report_decodes_with_the_checkpoints_length_penalty_unless_overridden(attention_run, tmp_path, monkeypatch):
    _, _, ckpt = attention_run
    own = Captioner.from_checkpoint(ckpt).settings
    assert own.length_penalty == 0.3 and own.max_len == 8  # the fixture's config
    other = _with_length_penalty(ckpt, 3.0, tmp_path / "penalty3.pt")
    seen = []

    def spy(captioner, store, features, settings, **kwargs):
        seen.append(settings)
        return real(captioner, store, features, settings, **kwargs)

    real = decode.decode_split
    monkeypatch.setattr(decode, "decode_split", spy)
    run = lambda path, **kw: bleu_report.evaluate_checkpoint(path, beam_sizes=[10], metrics=["bleu"],  # noqa: E731
                                                              progress=False, **kw)["results"][0]
    default, overridden, other_default = run(ckpt), run(ckpt, length_penalty=3.0), run(other)
    # exactly the checkpoint's settings, with the beam size and the explicit override
    assert seen == [own.replace(beam_size=10), own.replace(beam_size=10, length_penalty=3.0),
                    own.replace(beam_size=10, length_penalty=3.0)]
    assert [r["decoding"]["length_penalty"] for r in (default, overridden, other_default)] == [0.3, 3.0, 3.0]
    # on this checkpoint the penalty matters; a checkpoint saying 3.0 decodes like the override to 3.0
    assert default["captions"] != overridden["captions"]
    assert other_default["captions"] == overridden["captions"]


def test_max_len_and_length_penalty_zero_are_honoured(attention_run, tmp_path):
    _, _, ckpt = attention_run
    out = tmp_path / "r.json"
    bleu_report.main(["--checkpoint", str(ckpt), "--beam", "2", "--max-len", "0", "--length-penalty", "0",
                      "--metrics", "bleu", "--out", str(out), "--quiet"])
    row = json.loads(out.read_text())["results"][0]
    assert row["decoding"]["max_len"] == 0 and row["decoding"]["length_penalty"] == 0.0  # not the config's 8, 0.3
    assert row["captions"] == [""] * 8 and row["mean_length"] == 0
    with pytest.raises(SystemExit, match="error: decoding settings: max length -1: must be 0 or more"):
        bleu_report.main(["--checkpoint", str(ckpt), "--beam", "2", "--max-len", "-1", "--quiet"])


def test_int8_decodes_with_the_quantized_decoder_and_says_so(attention_run, tmp_path, monkeypatch):
    _, _, ckpt = attention_run
    seen = []

    def spy(captioner, store, features, settings, **kwargs):
        seen.append({type(m).__module__ for m in captioner.decoder.modules()})
        return real(captioner, store, features, settings, **kwargs)

    real = decode.decode_split
    monkeypatch.setattr(decode, "decode_split", spy)
    out = tmp_path / "r.json"
    bleu_report.main(["--checkpoint", str(ckpt), "--beam", "2", "--metrics", "bleu", "--int8", "--out", str(out),
                      "--quiet"])
    assert json.loads(out.read_text())["int8"] is True
    assert any("quantized" in m for m in seen[0])  # the decoder that decoded had int8 layers
    plain = bleu_report.evaluate_checkpoint(ckpt, beam_sizes=[2], metrics=["bleu"], progress=False)
    assert plain["int8"] is False and not any("quantized" in m for m in seen[1])
