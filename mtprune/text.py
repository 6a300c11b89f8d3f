"""How numbers read in messages, tables and the dashboard: one spelling for counts and durations."""

from __future__ import annotations


def human_count(n: int | float) -> str:
    """``22718221`` -> ``22.7M``, ``250000`` -> ``250k``, ``950`` -> ``950`` (three significant digits)."""
    n = float(n)
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{int(n)}"


def fmt_seconds(s: float) -> str:
    """``42 s``, ``3.5 min``, ``1.20 h``."""
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def plural(n: int | float, word: str, many: str | None = None) -> str:
    """``1 row``, ``2 rows``, ``1,024 examples``: a count with its noun in the right number
    (``many``: an irregular plural, ``plural(2, "query", "queries")``)."""
    count = f"{n:,}" if isinstance(n, int) or float(n).is_integer() else f"{n:g}"
    return f"{count} {word if n == 1 else (many or word + 's')}"


WORD_START = ("Ġ", "▁")  # GPT-2 byte-level BPE and sentencepiece mark the first piece of a word
CONTINUES = "##"  # WordPiece marks the pieces after the first


def _is_special(tok: str) -> bool:
    return len(tok) > 2 and ((tok[0], tok[-1]) in (("[", "]"), ("<", ">")))


def join_pieces(tokens) -> list[tuple[str, list[int]]]:
    """Word pieces joined into the words a reader sees: ``[(word, [piece indices])]``.

    WordPiece (``stu ##pe ##fying``) continues a word with ``##``; sentencepiece (``▁stu pe fying``)
    and byte-level BPE (``Ġstu pe fying``) start one with ``▁`` / ``Ġ``, so there a piece without the
    mark continues the word before it. Special tokens (``[CLS]``, ``</s>``) stand alone."""
    tokens = [str(t) for t in tokens]
    marked = any(t.startswith(WORD_START) for t in tokens)
    words: list[tuple[str, list[int]]] = []
    for i, tok in enumerate(tokens):
        special = _is_special(tok)
        if tok.startswith(CONTINUES) and len(tok) > len(CONTINUES):
            text, starts = tok[len(CONTINUES):], False
        elif tok.startswith(WORD_START):
            text, starts = tok[1:], True
        else:
            text, starts = tok, special or not marked
        prev_special = bool(words) and _is_special(tokens[words[-1][1][-1]])
        if starts or special or not words or prev_special:
            words.append((text, [i]))
        else:
            words[-1] = (words[-1][0] + text, words[-1][1] + [i])
    return words
