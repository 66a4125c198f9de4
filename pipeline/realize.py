"""Turn an :class:`Edit` into the text of a negative, working on tokens of the parse.

Substring edits break words ("woman".replace("man", "dog") gives "wodog"), so every edit names token
ranges. Realisation keeps the caption's own whitespace and punctuation, restores sentence-start
capitalisation, and fixes a/an in front of anything that changed.
"""

from __future__ import annotations

from .grammar import indefinite_article, match_case
from .records import Candidate, Edit, Replacement
from .syntax import Tok


def keeps_case(t: Tok) -> bool:
    """Whether a token keeps its capital letter away from the sentence start (names, "I", acronyms)."""
    return t.pos == "PROPN" or t.text == "I" or (t.text.isupper() and len(t.text) > 1)


def span_words(toks: tuple[Tok, ...], start: int, end: int) -> str:
    """Text of tokens ``[start, end)`` as it may appear mid-sentence (sentence-start case undone)."""
    parts = []
    for t in toks[start:end]:
        text = t.text
        if t.i == 0 and not keeps_case(t):
            text = text[:1].lower() + text[1:]
        parts.append(text + t.ws)
    return "".join(parts).rstrip()


def realize(text: str, toks: tuple[Tok, ...], edit: Edit) -> Candidate:
    """Apply the edit's replacements to the caption ``text`` and return the candidate."""
    reps = sorted(edit.replacements, key=lambda r: r.start)
    for x, y in zip(reps, reps[1:]):
        if y.start < x.end:
            raise ValueError(f"overlapping replacements in {edit.rule}: {x} / {y}")
    n = len(toks)
    pieces: list[list] = []  # [text, whitespace, changed]
    i = 0
    for r in reps:
        for t in toks[i : r.start]:
            pieces.append([t.text, t.ws, False])
        trailing = toks[r.end - 1].ws if r.end > r.start else ""
        words = r.text.split(" ") if r.text else []
        last = len(words) - 1
        for w_i, w in enumerate(words):
            pieces.append([w, " " if w_i < last else trailing, True])
        if not words and pieces and trailing == "":  # deletion: drop the space before it
            pieces[-1][1] = ""
        i = r.end
    for t in toks[i:n]:
        pieces.append([t.text, t.ws, False])
    _fix_articles(pieces)
    if pieces and text[:1].isupper():
        first = pieces[0]
        first[0] = first[0][:1].upper() + first[0][1:]
    return Candidate(
        text="".join([p[0] + p[1] for p in pieces]),
        family=edit.family,
        rule=edit.rule,
        token_spans=tuple((r.start, r.end) for r in reps),
        char_spans=tuple(_char_span(text, toks, r) for r in reps),
        items=edit.items,
        symmetric_link=edit.symmetric_link,
        priority=edit.priority,
    )


def _char_span(text: str, toks: tuple[Tok, ...], r: Replacement) -> tuple[int, int]:
    if r.end <= r.start:
        start = toks[r.start].idx if r.start < len(toks) else len(text)
        return (start, start)
    return (toks[r.start].idx, toks[r.end - 1].idx + len(toks[r.end - 1].text))


def _fix_articles(pieces: list[list]) -> None:
    for n in range(len(pieces) - 1):
        word = pieces[n][0]
        if word.lower() not in ("a", "an"):
            continue
        nxt = pieces[n + 1]
        if not (pieces[n][2] or nxt[2]) or not nxt[0][:1].isalnum():
            continue
        pieces[n][0] = match_case(word, indefinite_article(nxt[0]))
