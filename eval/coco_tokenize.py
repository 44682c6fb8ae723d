"""Caption normalisation for scoring, as the COCO caption toolkit does it.

The COCO caption toolkit (``pycocoevalcap``) never scores raw strings: its
``PTBTokenizer`` pipes every caption (hypotheses and references alike) through
Stanford CoreNLP 3.4.1's ``PTBTokenizer`` with ``-preserveLines -lowerCase``,
then drops the tokens in its ``PUNCTUATIONS`` list, and the scorers split the
result on whitespace. :func:`coco_tokenize` reproduces that in pure Python, so
captions can be scored without Java; :func:`ptb_tokenize_java` runs the real
thing (for checking, or when exactness on odd text matters).

What the Java tokenizer does, and so what :func:`coco_tokenize` does:

* Penn-Treebank splitting: ``man's -> man 's``, ``don't -> do n't``,
  ``can't -> ca n't``, ``cannot -> can not``, ``gonna -> gon na``,
  ``'tis -> 't is``. Punctuation is split off words, but numbers (``3.5``,
  ``1,000``, ``10:30``, ``1/2``), hyphenated words (``t-shirt``,
  ``12-year-old``), ``o'clock``, ``ma'am``, ``'n'``, ``'70s``, URLs, e-mail
  addresses and known abbreviations (``st.``, ``mr.``, ``u.s.``, ``a.m.``,
  ``etc.``, ``no.`` before a number, ...) stay whole.
* PTB normalisation, then lower-casing: straight and curly quotes become the
  LaTeX-style tokens (two backticks, two apostrophes, one backtick, one
  apostrophe); ``--``, en and em dashes become ``--``; ``…`` becomes ``...``;
  ``½`` ``1/2``; ``£`` ``#``, ``€`` ``$``, ``¢`` ``cents``; brackets become
  ``-lrb- -rrb- -lsb- -rsb- -lcb- -rcb-``.
* The toolkit then drops exactly these tokens: the four quote tokens,
  ``. ? ! , : ; - -- ...``, and ``-LRB- -RRB- -LCB- -RCB-`` (upper case, so
  they never match: Java has already lower-cased them).

Quirks of the toolkit reproduced on purpose, because they change scores:
brackets survive as the tokens ``-lrb-``, ``-rrb-`` (etc.); ``!!``, ``?!``,
``-----`` and ``'s`` are tokens that survive, while ``..`` is two periods that
do not; characters the lexer does not know (emoji and everything else outside
the Basic Multilingual Plane, ``₹``, a lone ``‐`` U+2010, letters newer than
its Unicode tables, ...) are deleted and split the text where they stood; and
the tokens the lexer joins with a non-breaking space (``5 7/8``, phone numbers)
come apart again in the scorers' ``str.split()``.

Where :func:`coco_tokenize` can differ from the Java tokenizer. It is a
hand-written model of the 3.4.1 lexer (JFlex: longest match wins, ties to the
earlier rule; the rules are data, in :mod:`eval.ptb_rules`), checked against the jar on realistic captions (see
tests/test_bleu.py), on tens of thousands of generated captions and
character soups, and character by character over the BMP. Known differences:

* Context across captions. The toolkit feeds all captions to one Java process,
  one per line, so the lexer's look-ahead can see the next caption. Visible
  effects: a caption ending in a single letter and a period (``"... the
  letter B."``) gives ``b`` when the next caption starts with one of ~45
  sentence-initial words (``A``, ``The``, ``He``, ...), else ``b.``; and one
  ending in ``no.`` (or ``nos. fig. figs. art. ca. pp. op. prop.``) keeps the
  period when the next caption starts with a digit. We treat every caption as
  the last of its batch (``b.``, ``no``).
* Rare constructions the model leaves out: character entities other than
  ``&amp; &quot; &apos; &lt; &gt; &nbsp;`` and a few dash entities, CP1252
  control characters (U+0080-U+009F), and, on a Python newer than 3.11, letters
  that Unicode added after version 14.
* Line breaks other than ``\\n`` inside a caption (``\\r``, U+2028, ...) make
  the toolkit itself mis-align captions and ids; we treat them as spaces, and
  so does :func:`ptb_tokenize_java`.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Hashable, Mapping, Sequence
from functools import lru_cache
from typing import TypeVar

from eval.ptb_rules import ABBREV1, ABBREV2, ABBREV3, Rule, rules

__all__ = ["PUNCTUATIONS", "coco_tokenize", "ptb_tokenize_java", "ptb_tokens"]

K = TypeVar("K", bound=Hashable)

#: Tokens pycocoevalcap's PTBTokenizer drops after the Java tokenizer has run.
PUNCTUATIONS = frozenset({"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                          ".", "?", "!", ",", ":", "-", "--", "...", ";"})

# Line breaks that would split one caption into two lines for the Java tool.
_LINE_BREAKS = re.compile("[\r\u2028\u2029\x0b\x0c]")


# --------------------------------------------------------------------------- the lexer


def _longest(text: str, pos: int) -> tuple[Rule, str] | None:
    """The rule that wins at ``pos`` (longest match counting trailing context; ties to the earlier rule)."""
    best, best_len, best_tok = None, 0, ""
    for rule in rules():
        for regex in rule.regexes:
            m = regex.match(text, pos)
            if m is None:
                continue
            size = m.end() - pos + len(m.groupdict().get("ctx") or "")
            if size > best_len:
                best, best_len, best_tok = rule, size, m.group(0)
    return None if best is None else (best, best_tok)


# A plain ASCII word followed by a space or the end, maybe after one of ``,;:.``: a single token (fast path).
_PLAIN = re.compile(r"[A-Za-z]+(?=[,;:.]?[ \n])")
# Punctuation that is a token on its own whatever follows it here (fast path).
_PUNCT = re.compile(r"[,;:](?=[ \n])|\.(?=\n| [^.])")
_SPACES = re.compile("[ ]+")
_ABBREVIATION = re.compile(f"(?:{ABBREV1}|{ABBREV2}|{ABBREV3})")
# Lower-cased words that the fast path must leave to the full lexer.
_SLOW_WORDS = frozenset({"cannot", "gonna", "gotta", "lemme", "gimme", "wanna"})


def _abbreviation_like(word: str) -> bool:
    return len(word) == 1 or _ABBREVIATION.fullmatch(word) is not None


def ptb_tokens(text: str) -> list[str]:
    """The Java PTBTokenizer's tokens for one caption, before lower-casing and punctuation removal.

    >>> ptb_tokens("A man's hat (red).")
    ['A', 'man', "'s", 'hat', '-LRB-', 'red', '-RRB-', '.']
    """
    # The lexer sees the caption followed by a line break (the next caption's, or the file's end).
    text = _LINE_BREAKS.sub(" ", text.replace("\n", " ")) + "\n"
    out: list[str] = []
    pos, end = 0, len(text)
    while pos < end:
        m = _SPACES.match(text, pos)
        if m:
            pos = m.end()
            continue
        m = _PLAIN.match(text, pos)
        if m and m.group(0).lower() not in _SLOW_WORDS and not (
                text[m.end()] == "." and _abbreviation_like(m.group(0))):
            out.append(m.group(0))
            pos = m.end()
            continue
        m = _PUNCT.match(text, pos)
        if m:
            out.append(m.group(0))
            pos = m.end()
            continue
        won = _longest(text, pos)
        if won is None:  # untokenizable character: deleted
            pos += 1
            continue
        rule, tok = won
        tokens, consumed = rule.emit(tok)
        out.extend(tokens)
        pos += consumed
    return out


def coco_tokenize(text: str) -> list[str]:
    """Tokenize one caption exactly as pycocoevalcap's PTBTokenizer + BLEU/CIDEr ``split()`` would.

    Lower-cased Penn-Treebank tokens with the toolkit's punctuation tokens removed, e.g.
    ``coco_tokenize("A man's dog doesn't like (the) cat.")`` is
    ``['a', 'man', "'s", 'dog', 'does', "n't", 'like', '-lrb-', 'the', '-rrb-', 'cat']``.
    See the module docstring for where this can differ from the Java tokenizer.
    """
    return list(_coco_tokenize(text))


@lru_cache(maxsize=1 << 16)
def _coco_tokenize(text: str) -> tuple[str, ...]:
    kept = [t for t in (tok.lower() for tok in ptb_tokens(text)) if t not in PUNCTUATIONS]
    return tuple(" ".join(kept).split())


# --------------------------------------------------------------------------- the real thing


def ptb_tokenize_java(captions: Mapping[K, Sequence[str]]) -> dict[K, list[str]]:
    """Run pycocoevalcap's own (Java) PTBTokenizer on ``captions``: id -> list of raw caption strings.

    Returns id -> list of tokenized captions, each a space-joined string as the toolkit returns them
    (``str.split()`` gives the tokens), in the input order; ids with no captions map to ``[]``.
    Line breaks inside a caption are replaced by spaces first (the toolkit would mis-align captions).

    Raises:
        RuntimeError: pycocoevalcap is not installed, ``java`` is not on PATH, or the tool's output
            does not line up with its input.
    """
    try:  # optional: the toolkit (and Java) are needed only for this cross-check
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError as e:
        raise RuntimeError("ptb_tokenize_java needs the COCO caption toolkit: pip install pycocoevalcap") from e
    if shutil.which("java") is None:
        raise RuntimeError("ptb_tokenize_java needs a Java runtime on PATH for pycocoevalcap's PTBTokenizer "
                           "(e.g. apt-get install default-jre-headless)")
    payload = {k: [{"caption": _LINE_BREAKS.sub(" ", c)} for c in caps] for k, caps in captions.items() if caps}
    if not payload:
        return {k: [] for k in captions}
    out = PTBTokenizer().tokenize(payload)
    result: dict[K, list[str]] = {}
    for k, caps in captions.items():
        got = list(out.get(k, []))
        if len(got) < len(caps) and all(not c.strip() for c in caps[len(got):]):
            got += [""] * (len(caps) - len(got))  # trailing empty captions print no line
        if len(got) != len(caps):
            raise RuntimeError(f"PTBTokenizer returned {len(got)} captions for id {k!r}, expected {len(caps)}; "
                               "is the Java tokenizer working (run it by hand to see its errors)?")
        result[k] = got
    return result
