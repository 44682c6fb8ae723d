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
earlier rule), checked against the jar on realistic captions (see
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
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

__all__ = ["PUNCTUATIONS", "coco_tokenize", "ptb_tokenize_java", "ptb_tokens"]

K = TypeVar("K", bound=Hashable)

#: Tokens pycocoevalcap's PTBTokenizer drops after the Java tokenizer has run.
PUNCTUATIONS = frozenset({"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                          ".", "?", "!", ",", ":", "-", "--", "...", ";"})

# Line breaks that would split one caption into two lines for the Java tool.
_LINE_BREAKS = re.compile("[\r\u2028\u2029\x0b\x0c]")


# --------------------------------------------------------------------------- character classes


def _class_of(pred: Callable[[str], bool]) -> str:
    """A regex character-class body of the BMP characters satisfying ``pred``."""
    parts, start = [], None
    for cp in range(0x10001):
        ok = cp < 0x10000 and not 0xD800 <= cp <= 0xDFFF and pred(chr(cp))
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            parts.append(f"\\u{start:04x}" if start == cp - 1 else f"\\u{start:04x}-\\u{cp - 1:04x}")
            start = None
    return "".join(parts)


def _is_word_char(ch: str) -> bool:
    """A character the lexer's WORD accepts: a letter, or one of the marks/modifiers it also allows (not a digit)."""
    return (ch.isalpha() or _WORD_EXTRAS.match(ch) is not None) and not ch.isdecimal() and not _too_new(ch)


# Non-letters that CoreNLP 3.4.1 accepts inside words (measured on the jar, one character at a time):
# the soft hyphen, modifier symbols, and combining marks of Greek, Cyrillic, Armenian, Hebrew, Arabic, Syriac,
# Thaana, NKo, several Indic scripts, Thai and Lao.
_WORD_EXTRAS = re.compile(
    "[\u00ad\u02c2-\u02c5\u02d2-\u02df\u02e5-\u02eb\u02ed\u02ef-\u036f\u0375\u0378-\u0379\u0384-\u0385"
    "\u03f6\u0483-\u0487\u055a-\u055f\u0591-\u05bd\u05bf\u05c1-\u05c2\u05c4-\u05c5\u05c7\u0615-\u061a"
    "\u064b-\u065e\u0670\u06d6-\u06e4\u06e7-\u06ed\u06fd-\u06fe\u070f\u0711\u0730-\u074c\u07a6-\u07b0"
    "\u07eb-\u07f3\u0900-\u0903\u093c\u093e-\u094e\u0951-\u0955\u0962-\u0963\u0981-\u0983\u09bc"
    "\u09be-\u09c4\u09c7-\u09c8\u09cb-\u09cd\u09d7\u09e2-\u09e3\u0a01-\u0a03\u0a3c\u0a3e-\u0a4f"
    "\u0a81-\u0a83\u0abc\u0abe-\u0acf\u0b82\u0bbe-\u0bc2\u0bc6-\u0bc8\u0bca-\u0bcd\u0c01-\u0c03"
    "\u0c3e-\u0c56\u0d3e-\u0d44\u0d46-\u0d48\u0e31\u0e34-\u0e3a\u0e47-\u0e4e\u0eb1\u0eb4-\u0ebc"
    "\u0ec8-\u0ecd\u1885-\u1886]")

# Letters and digits that Unicode assigned after the jar's character tables: the lexer deletes them.
_NEWER = re.compile(
    "[\u037f\u0528-\u052f\u0560\u0588\u05ef\u0860-\u086a\u0870-\u0887\u0889-\u088e\u08a1\u08ad-\u08c9"
    "\u0978\u0980\u09fc\u0af9\u0c34\u0c5a\u0c5d\u0c80\u0cdd\u0d04\u0d54-\u0d56\u0d5f\u0de6-\u0def"
    "\u0e86\u0e89\u0e8c\u0e8e-\u0e93\u0e98\u0ea0\u0ea8-\u0ea9\u0eac\u13f5\u13f8-\u13fd\u16f1-\u16f8"
    "\u170d\u171f\u1878\u191d-\u191e\u19b0-\u19c0\u19c8-\u19c9\u1b4c\u1c80-\u1c88\u1c90-\u1cba"
    "\u1cbd-\u1cbf\u1cf2-\u1cf3\u1cfa\u2c2f\u2c5f\u312e-\u312f\u31bb-\u31bf\u4db6-\u4dbf\u9fcd-\u9fff"
    "\ua698-\ua69d\ua78f\ua794-\ua79f\ua7ab-\ua7ca\ua7d0-\ua7d1\ua7d3\ua7d5-\ua7d9\ua7f2-\ua7f7"
    "\ua8fd-\ua8fe\ua9e0-\ua9e4\ua9e6-\ua9fe\uaa7e-\uaa7f\uab30-\uab5a\uab5c-\uab69\uab70-\uabbf]")


def _too_new(ch: str) -> bool:
    return _NEWER.match(ch) is not None


def _is_letter(ch: str) -> bool:
    """``[:letter:]`` as the lexer knew it."""
    return ch.isalpha() and not _too_new(ch)


def _is_digit(ch: str) -> bool:
    """``[:digit:]`` as the lexer knew it."""
    return ch.isdecimal() and not _too_new(ch)

# --------------------------------------------------------------------------- token normalisations

_LEFT_SINGLE = re.compile("[\u0091\u2018\u201b\u2039]")
_RIGHT_SINGLE = re.compile("[\u0092\u2019\u203a]")
_LEFT_DOUBLE = re.compile("[\u0093\u201c\u00ab]")
_RIGHT_DOUBLE = re.compile("[\u0094\u201d\u00bb]")
_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_CURRENCY = {"\u00a2": "cents", "\u00a3": "#", "\u0080": "$", "\u00a4": "$", "\u20a0": "$", "\u20ac": "$"}
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}
_AMP = re.compile("&amp;", re.IGNORECASE)


def _quotes(tok: str, left: bool = False) -> str:
    """LaTeX-style quote normalisation (the lexer's default ``latexQuotes``)."""
    tok = re.sub("&apos;|'", "`" if left else "'", tok)
    tok = re.sub('"|&quot;', "``" if left else "''", tok)
    tok = _LEFT_SINGLE.sub("`", tok)
    tok = _RIGHT_SINGLE.sub("'", tok)
    tok = _LEFT_DOUBLE.sub("``", tok)
    return _RIGHT_DOUBLE.sub("''", tok)


def _no_soft_hyphens(tok: str) -> str:
    return tok.replace("\u00ad", "") or "-"


def _dashes(tok: str) -> str:
    return "--" if 3 <= len(tok) <= 4 else tok


def _paren_names(tok: str) -> str:
    return tok.replace("(", "-LRB-").replace(")", "-RRB-")


def _nbsp(tok: str) -> str:
    return tok.replace(" ", "\u00a0")


# --------------------------------------------------------------------------- lexer rules


@dataclass(frozen=True)
class _Rule:
    """One lexer rule: a token pattern, maybe with trailing context (group ``ctx``, matched but not consumed).

    ``emit`` maps the matched body to the tokens to output and the number of characters consumed (the
    rest is pushed back and lexed again), like JFlex's ``yypushback``.
    """

    name: str
    regexes: tuple[re.Pattern, ...]  # alternatives; the longest match among them counts (as in JFlex)
    emit: Callable[[str], tuple[list[str], int]]


def _keep(tok: str) -> tuple[list[str], int]:
    return [tok], len(tok)


def _skip(tok: str) -> tuple[list[str], int]:
    return [], len(tok)


def _mapped(fn: Callable[[str], str]) -> Callable[[str], tuple[list[str], int]]:
    return lambda tok: ([fn(tok)], len(tok))


def _push_back(n: int) -> Callable[[str], tuple[list[str], int]]:
    return lambda tok: ([tok[:-n]], len(tok) - n)


def _acronym(tok: str) -> tuple[list[str], int]:
    """An acronym before a sentence-initial word: ``b.`` -> ``b`` ``.``; ``u.s.`` -> ``u.s.`` ``.``."""
    if len(tok) == 2:
        return [tok[0]], 1
    return [tok], len(tok) - 1


def _ci(words: str) -> str:
    """Alternation of ``|``-separated words, case-insensitive except a leading ``^`` (first letter upper only)."""
    alts = []
    for w in words.split("|"):
        alts.append(f"{w[1]}(?i:{w[2:]})" if w.startswith("^") else f"(?i:{w})")
    return "|".join(alts)


# Abbreviations kept with their period. Measured against CoreNLP 3.4.1 (see module docstring).
_ABBREV1 = _ci(
    "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec|Mon|Tues?|Wed|Thu|Thurs|Fri"
    "|Ala|Ariz|^Az|^Ark|Calif|Colo|Conn|Ct|Dak|^Del|Fla|Ga|^Ill|Ind|Kans?|Ky|^La|^Mass|Md|Mich|Minn|^Miss|Mo"
    "|Mont|Neb|Nev|Okla|^Ore|^Pa|Penn|Tenn|^Tex|Va|Vt|^Wash|Wisc?|Wyo"
    "|Inc|Cos?|Corp|Pp?t[ye]s?|Ltd|Plc|Rt|Bancorp|Bhd|Assn|Univ|Intl|Sys|tel|est|ext|sq"
    "|Jr|Sr|Bros|Ed\\.D|Ph\\.D|Esq|etc|al|seq|Bldg")
_ABBREV2 = _ci(
    "Mr|Mrs|Ms|^Miss|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|Cpl|Pvt|Capt|Ste?"
    "|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Mt|Ft|Adj|Adv|Asst|Assoc|Ens|Insp|Mlle|Mme|Msgr|Sfc"
    "|vs|Alex|Wm|Jos|Cie|a\\.k\\.a|cf|TREAS|Ph|Invt|Elec|Natl|Dept|Blvd|Rd") + "|(?i:m)[ft](?i:g)"
_ABBREV3 = _ci("ca|figs?|prop|nos?|art|pp|op")
# Words after which an acronym's period is taken to end the sentence (first letter must be upper case).
_SENTENCE_STARTS = _ci(
    "^According|^Additionally|^About|^After|^An|^As|^At|^A|^But|^Earlier|^However|^Here|^Her|^He|^If|^In|^It"
    "|^Last|^Many|^More|^Mr\\.|^Ms\\.|^Now|^Once|^One|^Other|^Our|^She|^Since|^Some|^Such|^So|^That|^Their"
    "|^Then|^There|^These|^They|^This|^The|^We|^When|^While|^What|^Yet|^You")

# Lower-cased words that the fast path must leave to the full lexer.
_SLOW_WORDS = frozenset({"cannot", "gonna", "gotta", "lemme", "gimme", "wanna"})


@lru_cache(maxsize=1)
def _rules() -> tuple[_Rule, ...]:
    """The lexer: rules in priority order (longest match wins, ties go to the earlier rule)."""
    L = _class_of(_is_word_char)  # noqa: N806 - names follow the lexer's macros
    A = _class_of(_is_letter)  # noqa: N806
    D = _class_of(_is_digit)  # noqa: N806
    AN = A + D  # noqa: N806
    sp = " \t\u00a0\u2000-\u200a\u3000"
    spnl = sp + "\r\n\u2028\u2029\x0b\x0c\u0085"
    apos = "(?:['\u0092\u2019]|&apos;)"
    apos_etc = "(?:['`\u0092\u2019\u0091\u2018\u201b]|&apos;)"
    word = f"[{L}][{L}{D}]*(?:[.!?][{L}][{L}{D}]*)*"
    redaux = f"{apos}(?:[msdMSD]|(?i:re|ve|ll))"
    sredaux = f"(?i:n){apos_etc}(?i:t)"
    acro = "[A-Za-z](?:\\.[A-Za-z])*"
    acro2 = "[A-Za-z](?:\\.[A-Za-z])+"
    num = f"[{D}]*(?:[.:,\u00ad\u066b\u066c][{D}]+)+|[{D}]+"
    hyphen = "[-_\u058a\u2010\u2011]"
    thing_part = f"(?:[dDoOlL]{apos_etc}[{AN}])?[{AN}]+"
    thing = f"{thing_part}(?:{hyphen}{thing_part})*"
    hthing = f"[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:{acro2}\\.|[A-Za-z0-9\u00ad]+))+"
    thinga = "[A-Z]+(?:(?:[+&]|(?i:&amp;))[A-Z]+)+"
    apoword = [
        f"{apos}(?i:n){apos}?", f"[lLdDjJ]{apos}", f"(?i:dunkin|somethin|ol){apos}", f"{apos}(?i:em)",
        f"[A-HJ-XZn]{apos_etc}[{A}]{{2}}[{A}]*", f"{apos}[2-9]0(?i:s)", f"{apos}(?i:till?|cause)",
        f"[{A}][{A}]*[aeiouyAEIOUY]{apos_etc}[aeiouA-Z][{A}]*", f"(?i:o){apos_etc}(?i:o)",
        "(?i:cont'd\\.?|'twas|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)"]
    url_end = "[^ \t\n\f\r\"<>|.!?(){},-]"
    full_url = f"(?i:https?)://[^ \t\n\f\r\"<>|(){{}}]+{url_end}"
    likely_url = ("(?:(?:(?i:www)\\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\\.)+[a-zA-Z]{2,4})"
                  "|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\\.)+(?i:com|net|org|edu)))"
                  f"(?:/[^ \t\n\f\r\"<>|()]+{url_end})?")
    email = ("(?:<|(?i:&lt;))?[a-zA-Z0-9][^ \t\n\f\r\"<>|(){}\u00a0]*@(?:[^ \t\n\f\r\"<>|(){}.\u00a0]+\\.)*"
             "[^ \t\n\f\r\"<>|(){}.\u00a0]+(?:>|(?i:&gt;))?")
    name = "[A-Za-z][A-Za-z0-9_:.-]*"
    sgml = (f"<(?:[!?][A-Za-z-][^>\r\n]*|{name}(?:[ ]+(?:{name}[ ]*=[ ]*(?:'[^'\r\n]*'|\"[^\"\r\n]*\"|{name})|{name}))*"
            f"[ ]*/?|/{name})[ ]*>")
    smiley_char = "[-^x=~<>']"
    asian_smiley = [f"{smiley_char}_{smiley_char}", f"\\({smiley_char}[_.]?{smiley_char}\\)",
                    "\\([\\^x=~<>']-[\\^x=~<>'`]\\)"]
    filename = (f"[{L}{D}]+(?:\\.[{L}{D}]+)*\\.(?i:bat|bmp|c|cgi|class|cpp|dll|docx?|exe|gif|gz|h|html?|jar|java"
                "|jpe?g|mov|mp3|pdf|php|pl|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip)")
    phone = ["(?:\\([0-9]{2,3}\\)[ \u00a0]?|(?:\\+\\+?)?(?:[0-9]{2,4}[- \u00a0])?[0-9]{2,4}[- \u00a0])"
             "[0-9]{3,4}[- \u00a0]?[0-9]{3,5}", "(?:(?:\\+\\+?)?[0-9]{2,4}\\.)?[0-9]{2,4}\\.[0-9]{3,4}\\.[0-9]{3,5}"]
    quotes = ["['\u0092\u2019]|&apos;", "''", "[`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094"
              "\u201e\u201f\u2039\u203a\u00ab\u00bb]{1,2}"]
    misc_symbol = ("[+%&~^|\\\\\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00b3\u00b4-\u00ba\u00d7\u00f7"
                   "\u0387\u05be\u05c0\u05c3\u05c6\u05f3\u05f4\u0600-\u0603\u0606-\u060a\u060c\u0614\u061b"
                   "\u061e\u066a\u066d\u0703-\u070d\u07f6-\u07f8\u0964\u0965\u0e4f\u1fbd\u2016\u2017"
                   "\u2020-\u2023\u2030-\u2038\u203b\u203e-\u2042\u2044\u207a-\u207f\u208a-\u208e"
                   "\u2100-\u214f\u2190-\u21ff\u2200-\u2bff\u3012\u30fb\uff01-\uff0f\uff1a-\uff20"
                   "\uff3b-\uff40\uff5b-\uff65]")
    table: list[tuple[str, str | list[str], str | None, Callable[[str], tuple[list[str], int]]]] = [
        ("prog_lang", "(?i:c)[+][+]|(?i:c|f)#", None, _keep),
        ("assim3", "(?i:cannot|'twas)", None, _push_back(3)),
        ("assim2", "(?i:'tis|gonna|gotta|lemme|gimme|wanna)", None, _push_back(2)),
        ("sgml", sgml, None, _mapped(_nbsp)),
        ("dash", "&(?i:MD|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]", None, lambda t: (["--"], len(t))),
        ("amp", "(?i:&amp;)", None, lambda t: (["&"], len(t))),
        ("entity", "&(?i:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);", None, _keep),
        ("word_redaux", word, redaux, _mapped(_no_soft_hyphens)),
        ("sword_sredaux", "[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*", sredaux, _mapped(_no_soft_hyphens)),
        ("word", word, None, _mapped(_no_soft_hyphens)),
        ("apoword", apoword, None, _keep),
        ("apoword2", f"(?i:y){apos}", f"[{A}]", _keep),
        ("full_url", full_url, None, _keep),
        ("likely_url", likely_url, None, _keep),
        ("email", email, None, _keep),
        ("twitter", ["@[a-zA-Z_][a-zA-Z_0-9]*", f"#[{L}]+"], None, _keep),
        ("redaux_ctx", redaux, "[^A-Za-z]", _mapped(_quotes)),
        ("sredaux", sredaux, None, _mapped(_quotes)),
        ("date", f"[{D}]{{1,2}}[-/][{D}]{{1,2}}[-/][{D}]{{2,4}}", None, _keep),
        ("number", f"[-+]?(?:{num})", None, _mapped(_no_soft_hyphens)),
        ("subsupnum", "[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)",
         None, _keep),
        ("frac", f"(?:[{D}]{{1,4}}[- \u00a0])?[{D}]{{1,4}}(?:\\\\?/|\u2044)[{D}]{{1,4}}", None, _mapped(_nbsp)),
        ("frac2", "[\u00bc\u00bd\u00be\u2153-\u215e]", None, _mapped(lambda t: _FRACTIONS.get(t, t))),
        ("tbspec", ("-(?i:RRB|LRB|RCB|LCB|RSB|LSB)-|(?i:C\\.D\\.s|pro-|anti-|S(?:&|&amp;)P-500|S(?:&|&amp;)Ls)"
                    f"|(?i:cap){apos}(?i:n)|(?i:c){apos}(?i:est)"), None, _mapped(lambda t: _AMP.sub("&", t))),
        ("thing3", "[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}", None, _keep),
        ("dolsign", "[A-Z]*\\$|#", None, _keep),
        ("dolsign2", "[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]",
         None, _mapped(lambda t: _CURRENCY.get(t, t))),
        ("acronym", f"{acro}\\.", f"[{spnl}]+(?:{_SENTENCE_STARTS})[{spnl}]", _acronym),
        ("abbrev3", f"(?:{_ABBREV3})\\.", f"[{spnl}]?[{D}]", _keep),
        ("abbrev1_ctx", f"(?:{_ABBREV1})\\.", "(?s:..)", _keep),
        ("abbrev1", f"(?:{_ABBREV1})\\.", None, _keep),
        ("abbrev2", [f"(?:{_ABBREV2})\\.", f"{acro}\\."], None, _keep),
        ("tbspec2", f"{apos}[0-9][0-9]", f"[{spnl}]", _keep),
        ("filename", filename, f"[{spnl}.?!,]", _keep),
        ("word_dot", f"{word}\\.", "[,;:\u3001]", _mapped(_no_soft_hyphens)),
        ("phone", phone, None, _mapped(lambda t: _paren_names(_nbsp(t)))),
        ("dblquote_left", '"|(?i:&quot;)', "[A-Za-z0-9$]", _mapped(lambda t: _quotes(t, left=True))),
        ("dblquote", '"|(?i:&quot;)', None, _mapped(_quotes)),
        ("del", "\x7f", None, _skip),
        ("lt", "<|(?i:&lt;)", None, lambda t: (["<"], len(t))),
        ("gt", ">|(?i:&gt;)", None, lambda t: ([">"], len(t))),
        ("smiley", "[<>]?[:;=][-o*']?[()DPdpO\\\\{@|\\[\\]]", "[^A-Za-z0-9]", _mapped(_paren_names)),
        ("asian_smiley", asian_smiley, None, _mapped(_paren_names)),
        ("bracket", "[(){}\\[\\]]", None, _mapped(_BRACKETS.__getitem__)),
        ("hyphens", "-+", None, _mapped(_dashes)),
        ("ellipsis", "\\.{3,5}|(?:\\.[ \u00a0]){2,4}\\.|[\u0085\u2026]", None, lambda t: (["..."], len(t))),
        ("fnmarks", "@+|#+|_+", None, _keep),
        ("asterisks", "\\*+|(?:\\\\\\*){1,3}", None, _keep),
        ("insentp", "[,;:\u3001]", None, _keep),
        ("bangs", "[?!]+", None, _keep),
        ("period", "[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002]", None, _keep),
        ("equals", "=", None, _keep),
        ("slash", "/", None, _keep),
        ("hthing_dot", f"{hthing}\\.", "[,;:\u3001]", _mapped(_no_soft_hyphens)),
        ("hthing", hthing, None, _mapped(_no_soft_hyphens)),
        ("thing_dot", f"{thing}\\.", "[,;:\u3001]", _keep),
        ("thing", thing, None, _keep),
        ("thinga_dot", f"{thinga}\\.", "[,;:\u3001]", _mapped(lambda t: _AMP.sub("&", t))),
        ("thinga", thinga, None, _mapped(lambda t: _AMP.sub("&", t))),
        ("quote_left", "'", "[A-Za-z][^ \t\n\r\u00a0]", _mapped(lambda t: _quotes(t, left=True))),
        ("redaux", redaux, None, _mapped(_quotes)),
        ("quotes", quotes, None, _mapped(_quotes)),
        ("duck_feet", "<<|>>", None, _keep),
        ("misc_symbol", misc_symbol, None, _keep),
        ("space", f"\x00|[{sp}]+|[\u200b\u200e\u200f\ufeff]|\r\n|[{spnl}]|(?i:&nbsp;)", None, _skip),
    ]
    rules = []
    for name, body, ctx, emit in table:
        alts = [body] if isinstance(body, str) else body
        tail = "" if ctx is None else f"(?=(?P<ctx>{ctx}))"
        rules.append(_Rule(name, tuple(re.compile(f"(?:{alt}){tail}") for alt in alts), emit))
    return tuple(rules)


def _longest(text: str, pos: int) -> tuple[_Rule, str] | None:
    """The rule that wins at ``pos`` (longest match counting trailing context; ties to the earlier rule)."""
    best, best_len, best_tok = None, 0, ""
    for rule in _rules():
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
_ABBREVIATION = re.compile(f"(?:{_ABBREV1}|{_ABBREV2}|{_ABBREV3})")


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
    try:
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
