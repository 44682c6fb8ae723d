"""The COCO caption metrics on tokenized captions, with the optional toolkit imported lazily.

* **BLEU-1..4**: always, from :mod:`eval.bleu` (the toolkit's numbers, no dependency).
* **ROUGE-L** and **CIDEr** (the toolkit's ``Cider`` class, which is CIDEr-D: IDF from the
  evaluated images' references, Gaussian length penalty, clipped counts, x10): pure Python,
  need ``pycocoevalcap`` (``pip install pycocoevalcap``).
* **METEOR** 1.5: needs ``pycocoevalcap`` and a Java runtime. Its Java process loads a
  paraphrase table at start (~10 s); it is started once per Python process and reused.
* **SPICE**: needs ``pycocoevalcap``, Java and the Stanford CoreNLP 3.6.0 jars, which the
  toolkit downloads on first use; without them (offline) it is reported as not run.

Every metric scores exactly what the toolkit's ``COCOEvalCap`` would hand it: per image one
hypothesis string and a list of reference strings, each the space-joined tokens that
:func:`tokenize_captions` produced (``coco``: :func:`eval.coco_tokenize.coco_tokenize`,
pure Python; ``ptb-java``: the toolkit's own Java PTBTokenizer).
"""

from __future__ import annotations

import atexit
import shutil
import threading
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.coco_tokenize import coco_tokenize, ptb_tokenize_java
from nic.bleu import BleuResult, corpus_bleu, sentence_bleu

__all__ = ["METRICS", "TOKENIZERS", "MetricScores", "compute_metrics", "metric_unavailable", "select_metrics",
           "tokenize_captions"]

#: Scoring tokenizers: name -> what it does (shown in the report).
TOKENIZERS = {
    "coco": "eval.coco_tokenize.coco_tokenize (pure-Python model of the toolkit's PTB tokenizer + punctuation "
            "removal) on hypotheses and references alike",
    "ptb-java": "the toolkit's own Java PTBTokenizer (Stanford CoreNLP 3.4.1) + punctuation removal, "
                "on hypotheses and references alike",
}
#: Metric names for ``--metrics``, in report order; and the score keys each one produces.
METRICS = ("bleu", "meteor", "rouge", "cider", "spice")
SCORE_KEYS = {"bleu": ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"), "meteor": ("METEOR",), "rouge": ("ROUGE-L",),
              "cider": ("CIDEr",), "spice": ("SPICE",)}

Tokens = Sequence[str]


# --------------------------------------------------------------------------- tokenization


def tokenize_captions(captions: Mapping[Hashable, Sequence[str]], tokenizer: str = "coco"
                      ) -> dict[Hashable, list[list[str]]]:
    """Tokenize every caption: key -> list of raw captions  ->  key -> list of token lists.

    ``tokenizer`` is a key of :data:`TOKENIZERS`. ``ptb-java`` runs one Java process for the
    whole mapping (call it once for the references and once for the hypotheses, as the
    toolkit does, to reproduce it exactly).
    """
    if tokenizer == "coco":
        return {k: [coco_tokenize(c) for c in caps] for k, caps in captions.items()}
    if tokenizer == "ptb-java":
        out = ptb_tokenize_java({k: list(caps) for k, caps in captions.items()})
        return {k: [c.split() for c in caps] for k, caps in out.items()}
    raise ValueError(f"unknown tokenizer {tokenizer!r}; valid: {', '.join(TOKENIZERS)}")


# --------------------------------------------------------------------------- availability


# pycocoevalcap is optional: it is imported only where a toolkit metric is checked for or run.


def _toolkit_missing() -> str | None:
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        return "pycocoevalcap is not installed (pip install pycocoevalcap)"
    return None


def _java_missing() -> str | None:
    if shutil.which("java") is None:
        return "no Java runtime on PATH (e.g. apt-get install default-jre-headless)"
    return None


def spice_jars() -> list[Path]:
    """The Stanford CoreNLP jars SPICE needs, where pycocoevalcap looks for them."""
    import pycocoevalcap

    lib = Path(next(iter(pycocoevalcap.__path__))) / "spice" / "lib"
    return [lib / "stanford-corenlp-3.6.0.jar", lib / "stanford-corenlp-3.6.0-models.jar"]


def metric_unavailable(name: str) -> str | None:
    """Why metric ``name`` cannot run here, or None when it can."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; valid: {', '.join(METRICS)}")
    if name == "bleu":
        return None
    reason = _toolkit_missing()
    if reason or name in ("rouge", "cider"):
        return reason
    reason = _java_missing()
    if reason or name == "meteor":
        return reason
    missing = [p for p in spice_jars() if not p.exists()]
    if missing:
        return (f"SPICE needs the Stanford CoreNLP 3.6.0 jars, which pycocoevalcap downloads on first use "
                f"(~400 MB from nlp.stanford.edu); missing: {', '.join(p.name for p in missing)} in "
                f"{missing[0].parent}. With network access, run once: python -c \"from "
                "pycocoevalcap.spice.get_stanford_models import get_stanford_models; get_stanford_models()\"")
    return None


def select_metrics(requested: Sequence[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """(metrics to run, {metric: why not run}).

    ``requested`` None means every available metric (the unavailable ones are listed with their
    reason). Metrics named explicitly must be available: otherwise ``ValueError`` with the reason.
    BLEU always runs.
    """
    if requested is None:
        run, skipped = [], {}
        for name in METRICS:
            reason = metric_unavailable(name)
            if reason:
                skipped[name] = reason
            else:
                run.append(name)
        return run, skipped
    names = {"bleu", *requested}
    for name in names:
        reason = metric_unavailable(name)  # raises on unknown names
        if reason:
            raise ValueError(f"metric {name!r} cannot run here: {reason}")
    return [m for m in METRICS if m in names], {m: "not requested (--metrics)" for m in METRICS if m not in names}


# --------------------------------------------------------------------------- scoring


@dataclass
class MetricScores:
    """Corpus and per-image scores of one set of hypotheses.

    ``corpus`` and ``per_image`` are keyed by score name (``BLEU-1`` .. ``BLEU-4``, ``METEOR``,
    ``ROUGE-L``, ``CIDEr``, ``SPICE``); ``failed`` holds metrics that raised (name -> error);
    ``seconds`` the time each metric took.
    """

    bleu: BleuResult
    corpus: dict[str, float] = field(default_factory=dict)
    per_image: dict[str, list[float]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


_METEOR: Any = None
_METEOR_LOCK = threading.Lock()


def _meteor() -> Any:
    """The shared METEOR scorer (one Java process per Python process, started on first use)."""
    global _METEOR
    if _METEOR is None or _METEOR.meteor_p.poll() is not None:
        from pycocoevalcap.meteor.meteor import Meteor

        _METEOR = Meteor()
    return _METEOR


def _stop_meteor() -> None:
    """Stop the shared METEOR process, if any (caller holds the lock)."""
    global _METEOR
    if _METEOR is not None:
        p = _METEOR.meteor_p
        if p.poll() is None:
            p.stdin.close()
            p.kill()
            p.wait()
        _METEOR = None


@atexit.register
def close_meteor() -> None:
    """Stop the shared METEOR process (also done at exit)."""
    with _METEOR_LOCK:
        _stop_meteor()


def _toolkit_score(name: str, gts: dict[int, list[str]], res: dict[int, list[str]]) -> tuple[float, list[float]]:
    if name == "rouge":
        from pycocoevalcap.rouge.rouge import Rouge

        score, scores = Rouge().compute_score(gts, res)
    elif name == "cider":
        from pycocoevalcap.cider.cider import Cider

        score, scores = Cider().compute_score(gts, res)
    elif name == "meteor":
        with _METEOR_LOCK:
            try:
                score, scores = _meteor().compute_score(gts, res)
            except Exception:
                _stop_meteor()  # a fresh process next time
                raise
    elif name == "spice":
        from pycocoevalcap.spice.spice import Spice

        score, details = Spice().compute_score(gts, res)
        scores = [d["All"]["f"] for d in details]
    else:
        raise ValueError(f"unknown metric {name!r}")
    return float(score), [float(s) for s in scores]


def compute_metrics(hypotheses: Sequence[Tokens], references: Sequence[Sequence[Tokens]],
                    metrics: Sequence[str] = ("bleu",), *, raise_errors: bool = False) -> MetricScores:
    """Score tokenized hypotheses (one per image) against tokenized references (>= 1 per image).

    Args:
        hypotheses: ``hypotheses[i]`` the token list of image i's caption (may be empty).
        references: ``references[i]`` image i's reference token lists.
        metrics: names from :data:`METRICS` (BLEU always runs); see :func:`select_metrics`.
        raise_errors: re-raise a toolkit metric's failure instead of recording it in ``failed``.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference sets")
    if not hypotheses:
        raise ValueError("nothing to score: no image has both a caption and references")
    start = time.perf_counter()
    bleu = corpus_bleu(hypotheses, references)
    out = MetricScores(bleu=bleu, corpus={f"BLEU-{n}": b for n, b in enumerate(bleu.bleu, 1)})
    per = [sentence_bleu(h, r) for h, r in zip(hypotheses, references)]
    for n in range(4):
        out.per_image[f"BLEU-{n + 1}"] = [p[n] for p in per]
    out.seconds["bleu"] = time.perf_counter() - start
    # What COCOEvalCap hands the scorers: tokenized, space-joined strings keyed by image.
    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [" ".join(h)] for i, h in enumerate(hypotheses)}
    for name in metrics:
        if name == "bleu":
            continue
        start = time.perf_counter()
        try:
            score, scores = _toolkit_score(name, gts, res)
        except Exception as e:
            if raise_errors:
                raise
            out.failed[name] = f"{type(e).__name__}: {e}"
            continue
        key = SCORE_KEYS[name][0]
        out.corpus[key] = score
        out.per_image[key] = scores
        out.seconds[name] = time.perf_counter() - start
    return out
