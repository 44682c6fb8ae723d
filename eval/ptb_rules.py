"""The lexer rules of CoreNLP 3.4.1's PTBTokenizer, as data: what :mod:`eval.coco_tokenize` runs.

:data:`TABLE` lists the rules in priority order, each a pattern template (or alternatives),
an optional trailing context (matched, not consumed) and what the rule emits;
:data:`MACROS` holds the lexer's named sub-patterns. :func:`rules` expands and compiles
them on first use (the character classes take a pass over the Basic Multilingual Plane).
How the rules were measured against the jar, and where they can differ from it: see
:mod:`eval.coco_tokenize`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["ABBREV1", "ABBREV2", "ABBREV3", "MACROS", "TABLE", "Rule", "rules"]


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
class Rule:
    """One lexer rule: a token pattern, maybe with trailing context (group ``ctx``, matched but not consumed).

    ``emit`` maps the matched body to the tokens to output and the number of characters consumed (the
    rest is pushed back and lexed again), like JFlex's ``yypushback``.
    """

    name: str
    regexes: tuple[re.Pattern, ...]  # alternatives; the longest match among them counts (as in JFlex)
    emit: Emit


Emit = Callable[[str], tuple[list[str], int]]  # matched text -> (tokens, characters consumed)


def _keep(tok: str) -> tuple[list[str], int]:
    return [tok], len(tok)


def _skip(tok: str) -> tuple[list[str], int]:
    return [], len(tok)


def _mapped(fn: Callable[[str], str]) -> Emit:
    return lambda tok: ([fn(tok)], len(tok))


def _push_back(n: int) -> Emit:
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
ABBREV1 = _ci(
    "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec|Mon|Tues?|Wed|Thu|Thurs|Fri"
    "|Ala|Ariz|^Az|^Ark|Calif|Colo|Conn|Ct|Dak|^Del|Fla|Ga|^Ill|Ind|Kans?|Ky|^La|^Mass|Md|Mich|Minn|^Miss|Mo"
    "|Mont|Neb|Nev|Okla|^Ore|^Pa|Penn|Tenn|^Tex|Va|Vt|^Wash|Wisc?|Wyo"
    "|Inc|Cos?|Corp|Pp?t[ye]s?|Ltd|Plc|Rt|Bancorp|Bhd|Assn|Univ|Intl|Sys|tel|est|ext|sq"
    "|Jr|Sr|Bros|Ed\\.D|Ph\\.D|Esq|etc|al|seq|Bldg")
ABBREV2 = _ci(
    "Mr|Mrs|Ms|^Miss|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|Cpl|Pvt|Capt|Ste?"
    "|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Mt|Ft|Adj|Adv|Asst|Assoc|Ens|Insp|Mlle|Mme|Msgr|Sfc"
    "|vs|Alex|Wm|Jos|Cie|a\\.k\\.a|cf|TREAS|Ph|Invt|Elec|Natl|Dept|Blvd|Rd") + "|(?i:m)[ft](?i:g)"
ABBREV3 = _ci("ca|figs?|prop|nos?|art|pp|op")
# Words after which an acronym's period is taken to end the sentence (first letter must be upper case).
_SENTENCE_STARTS = _ci(
    "^According|^Additionally|^About|^After|^An|^As|^At|^A|^But|^Earlier|^However|^Here|^Her|^He|^If|^In|^It"
    "|^Last|^Many|^More|^Mr\\.|^Ms\\.|^Now|^Once|^One|^Other|^Our|^She|^Since|^Some|^Such|^So|^That|^Their"
    "|^Then|^There|^These|^They|^This|^The|^We|^When|^While|^What|^Yet|^You")

# --------------------------------------------------------------------------- the rule table
#
# Patterns are templates: ``{NAME}`` stands for a macro below (``{L}`` word characters, ``{A}``
# letters, ``{D}`` digits: the lexer's character classes, computed on first use because they
# take a pass over the BMP), expanded by :func:`rules`; every other brace is regex syntax
# (``{2,4}``). Names follow the lexer's macros.

#: (name, template) in definition order; a template may use the macros defined before it.
MACROS: tuple[tuple[str, str], ...] = (
    ("AN", "{A}{D}"),
    ("sp", " \t\u00a0\u2000-\u200a\u3000"),
    ("spnl", "{sp}\r\n\u2028\u2029\x0b\x0c\u0085"),
    ("apos", "(?:['\u0092\u2019]|&apos;)"),
    ("apos_etc", "(?:['`\u0092\u2019\u0091\u2018\u201b]|&apos;)"),
    ("word", "[{L}][{L}{D}]*(?:[.!?][{L}][{L}{D}]*)*"),
    ("redaux", "{apos}(?:[msdMSD]|(?i:re|ve|ll))"),
    ("sredaux", "(?i:n){apos_etc}(?i:t)"),
    ("acro", "[A-Za-z](?:\\.[A-Za-z])*"),
    ("acro2", "[A-Za-z](?:\\.[A-Za-z])+"),
    ("num", "[{D}]*(?:[.:,\u00ad\u066b\u066c][{D}]+)+|[{D}]+"),
    ("hyphen", "[-_\u058a\u2010\u2011]"),
    ("thing_part", "(?:[dDoOlL]{apos_etc}[{AN}])?[{AN}]+"),
    ("thing", "{thing_part}(?:{hyphen}{thing_part})*"),
    ("hthing", "[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:{acro2}\\.|[A-Za-z0-9\u00ad]+))+"),
    ("thinga", "[A-Z]+(?:(?:[+&]|(?i:&amp;))[A-Z]+)+"),
    ("url_end", "[^ \t\n\f\r\"<>|.!?(){},-]"),
    ("full_url", "(?i:https?)://[^ \t\n\f\r\"<>|(){}]+{url_end}"),
    ("likely_url", "(?:(?:(?i:www)\\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\\.)+[a-zA-Z]{2,4})"
                   "|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\\.)+(?i:com|net|org|edu)))"
                   "(?:/[^ \t\n\f\r\"<>|()]+{url_end})?"),
    ("email", "(?:<|(?i:&lt;))?[a-zA-Z0-9][^ \t\n\f\r\"<>|(){}\u00a0]*@(?:[^ \t\n\f\r\"<>|(){}.\u00a0]+\\.)*"
              "[^ \t\n\f\r\"<>|(){}.\u00a0]+(?:>|(?i:&gt;))?"),
    ("name", "[A-Za-z][A-Za-z0-9_:.-]*"),
    ("sgml", "<(?:[!?][A-Za-z-][^>\r\n]*|{name}(?:[ ]+(?:{name}[ ]*=[ ]*(?:'[^'\r\n]*'|\"[^\"\r\n]*\"|{name})|{name}))*"
             "[ ]*/?|/{name})[ ]*>"),
    ("smiley_char", "[-^x=~<>']"),
    ("filename", "[{L}{D}]+(?:\\.[{L}{D}]+)*\\.(?i:bat|bmp|c|cgi|class|cpp|dll|docx?|exe|gif|gz|h|html?|jar|java"
                 "|jpe?g|mov|mp3|pdf|php|pl|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip)"),
    ("misc_symbol", "[+%&~^|\\\\\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00b3\u00b4-\u00ba\u00d7\u00f7"
                    "\u0387\u05be\u05c0\u05c3\u05c6\u05f3\u05f4\u0600-\u0603\u0606-\u060a\u060c\u0614\u061b"
                    "\u061e\u066a\u066d\u0703-\u070d\u07f6-\u07f8\u0964\u0965\u0e4f\u1fbd\u2016\u2017"
                    "\u2020-\u2023\u2030-\u2038\u203b\u203e-\u2042\u2044\u207a-\u207f\u208a-\u208e"
                    "\u2100-\u214f\u2190-\u21ff\u2200-\u2bff\u3012\u30fb\uff01-\uff0f\uff1a-\uff20"
                    "\uff3b-\uff40\uff5b-\uff65]"),
    ("abbrev1", ABBREV1),
    ("abbrev2", ABBREV2),
    ("abbrev3", ABBREV3),
    ("sentence_starts", _SENTENCE_STARTS),
)

_APOWORD = ["{apos}(?i:n){apos}?", "[lLdDjJ]{apos}", "(?i:dunkin|somethin|ol){apos}", "{apos}(?i:em)",
            "[A-HJ-XZn]{apos_etc}[{A}]{2}[{A}]*", "{apos}[2-9]0(?i:s)", "{apos}(?i:till?|cause)",
            "[{A}][{A}]*[aeiouyAEIOUY]{apos_etc}[aeiouA-Z][{A}]*", "(?i:o){apos_etc}(?i:o)",
            "(?i:cont'd\\.?|'twas|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)"]
_ASIAN_SMILEY = ["{smiley_char}_{smiley_char}", "\\({smiley_char}[_.]?{smiley_char}\\)",
                 "\\([\\^x=~<>']-[\\^x=~<>'`]\\)"]
_PHONE = ["(?:\\([0-9]{2,3}\\)[ \u00a0]?|(?:\\+\\+?)?(?:[0-9]{2,4}[- \u00a0])?[0-9]{2,4}[- \u00a0])"
          "[0-9]{3,4}[- \u00a0]?[0-9]{3,5}", "(?:(?:\\+\\+?)?[0-9]{2,4}\\.)?[0-9]{2,4}\\.[0-9]{3,4}\\.[0-9]{3,5}"]
_QUOTES = ["['\u0092\u2019]|&apos;", "''", "[`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094"
           "\u201e\u201f\u2039\u203a\u00ab\u00bb]{1,2}"]
_TBSPEC = ("-(?i:RRB|LRB|RCB|LCB|RSB|LSB)-|(?i:C\\.D\\.s|pro-|anti-|S(?:&|&amp;)P-500|S(?:&|&amp;)Ls)"
           "|(?i:cap){apos}(?i:n)|(?i:c){apos}(?i:est)")
_CLAUSE_END = "[,;:\u3001]"  # trailing context of the "word." rules

#: The lexer's rules in priority order (longest match wins, ties go to the earlier rule):
#: (name, pattern template or alternatives, trailing-context template or None, emit).
TABLE: tuple[tuple[str, str | list[str], str | None, Emit], ...] = (
    ("prog_lang", "(?i:c)[+][+]|(?i:c|f)#", None, _keep),
    ("assim3", "(?i:cannot|'twas)", None, _push_back(3)),
    ("assim2", "(?i:'tis|gonna|gotta|lemme|gimme|wanna)", None, _push_back(2)),
    ("sgml", "{sgml}", None, _mapped(_nbsp)),
    ("dash", "&(?i:MD|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]", None, lambda t: (["--"], len(t))),
    ("amp", "(?i:&amp;)", None, lambda t: (["&"], len(t))),
    ("entity", "&(?i:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);", None, _keep),
    ("word_redaux", "{word}", "{redaux}", _mapped(_no_soft_hyphens)),
    ("sword_sredaux", "[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*", "{sredaux}", _mapped(_no_soft_hyphens)),
    ("word", "{word}", None, _mapped(_no_soft_hyphens)),
    ("apoword", _APOWORD, None, _keep),
    ("apoword2", "(?i:y){apos}", "[{A}]", _keep),
    ("full_url", "{full_url}", None, _keep),
    ("likely_url", "{likely_url}", None, _keep),
    ("email", "{email}", None, _keep),
    ("twitter", ["@[a-zA-Z_][a-zA-Z_0-9]*", "#[{L}]+"], None, _keep),
    ("redaux_ctx", "{redaux}", "[^A-Za-z]", _mapped(_quotes)),
    ("sredaux", "{sredaux}", None, _mapped(_quotes)),
    ("date", "[{D}]{1,2}[-/][{D}]{1,2}[-/][{D}]{2,4}", None, _keep),
    ("number", "[-+]?(?:{num})", None, _mapped(_no_soft_hyphens)),
    ("subsupnum", "[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)",
     None, _keep),
    ("frac", "(?:[{D}]{1,4}[- \u00a0])?[{D}]{1,4}(?:\\\\?/|\u2044)[{D}]{1,4}", None, _mapped(_nbsp)),
    ("frac2", "[\u00bc\u00bd\u00be\u2153-\u215e]", None, _mapped(lambda t: _FRACTIONS.get(t, t))),
    ("tbspec", _TBSPEC, None, _mapped(lambda t: _AMP.sub("&", t))),
    ("thing3", "[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}", None, _keep),
    ("dolsign", "[A-Z]*\\$|#", None, _keep),
    ("dolsign2", "[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]",
     None, _mapped(lambda t: _CURRENCY.get(t, t))),
    ("acronym", "{acro}\\.", "[{spnl}]+(?:{sentence_starts})[{spnl}]", _acronym),
    ("abbrev3", "(?:{abbrev3})\\.", "[{spnl}]?[{D}]", _keep),
    ("abbrev1_ctx", "(?:{abbrev1})\\.", "(?s:..)", _keep),
    ("abbrev1", "(?:{abbrev1})\\.", None, _keep),
    ("abbrev2", ["(?:{abbrev2})\\.", "{acro}\\."], None, _keep),
    ("tbspec2", "{apos}[0-9][0-9]", "[{spnl}]", _keep),
    ("filename", "{filename}", "[{spnl}.?!,]", _keep),
    ("word_dot", "{word}\\.", _CLAUSE_END, _mapped(_no_soft_hyphens)),
    ("phone", _PHONE, None, _mapped(lambda t: _paren_names(_nbsp(t)))),
    ("dblquote_left", '"|(?i:&quot;)', "[A-Za-z0-9$]", _mapped(lambda t: _quotes(t, left=True))),
    ("dblquote", '"|(?i:&quot;)', None, _mapped(_quotes)),
    ("del", "\x7f", None, _skip),
    ("lt", "<|(?i:&lt;)", None, lambda t: (["<"], len(t))),
    ("gt", ">|(?i:&gt;)", None, lambda t: ([">"], len(t))),
    ("smiley", "[<>]?[:;=][-o*']?[()DPdpO\\\\{@|\\[\\]]", "[^A-Za-z0-9]", _mapped(_paren_names)),
    ("asian_smiley", _ASIAN_SMILEY, None, _mapped(_paren_names)),
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
    ("hthing_dot", "{hthing}\\.", _CLAUSE_END, _mapped(_no_soft_hyphens)),
    ("hthing", "{hthing}", None, _mapped(_no_soft_hyphens)),
    ("thing_dot", "{thing}\\.", _CLAUSE_END, _keep),
    ("thing", "{thing}", None, _keep),
    ("thinga_dot", "{thinga}\\.", _CLAUSE_END, _mapped(lambda t: _AMP.sub("&", t))),
    ("thinga", "{thinga}", None, _mapped(lambda t: _AMP.sub("&", t))),
    ("quote_left", "'", "[A-Za-z][^ \t\n\r\u00a0]", _mapped(lambda t: _quotes(t, left=True))),
    ("redaux", "{redaux}", None, _mapped(_quotes)),
    ("quotes", _QUOTES, None, _mapped(_quotes)),
    ("duck_feet", "<<|>>", None, _keep),
    ("misc_symbol", "{misc_symbol}", None, _keep),
    ("space", "\x00|[{sp}]+|[\u200b\u200e\u200f\ufeff]|\r\n|[{spnl}]|(?i:&nbsp;)", None, _skip),
)

_MACRO = re.compile(r"\{([A-Za-z_][A-Za-z_0-9]*)\}")


def _expand(template: str, macros: dict[str, str]) -> str:
    """``template`` with every ``{NAME}`` replaced by its macro (an unknown name is a KeyError)."""
    return _MACRO.sub(lambda m: macros[m.group(1)], template)


@lru_cache(maxsize=1)
def rules() -> tuple[Rule, ...]:
    """The lexer: :data:`TABLE` compiled, in priority order (built on first use, then cached)."""
    macros = {"L": _class_of(_is_word_char), "A": _class_of(_is_letter), "D": _class_of(_is_digit)}
    for name, template in MACROS:
        macros[name] = _expand(template, macros)
    compiled = []
    for name, body, ctx, emit in TABLE:
        alts = [body] if isinstance(body, str) else body
        tail = "" if ctx is None else f"(?=(?P<ctx>{_expand(ctx, macros)}))"
        compiled.append(Rule(name, tuple(re.compile(f"(?:{_expand(alt, macros)}){tail}") for alt in alts), emit))
    return tuple(compiled)
