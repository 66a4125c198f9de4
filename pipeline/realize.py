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
    """Apply the edit's replacements to the caption ``text`` and return the candidate.

    Unchanged stretches are copied from the caption by character offset (its own spacing and
    punctuation survive); an article is fixed wherever it meets a changed word.
    """
    reps = sorted(edit.replacements, key=lambda r: r.start)
    out: list[str] = []
    pos = 0  # character position in ``text`` copied so far
    prev_end = -1
    for r in reps:
        if r.start < prev_end:
            raise ValueError(f"overlapping replacements in {edit.rule}: {reps}")
        prev_end = r.end
        if r.end > r.start:
            a, b = toks[r.start].idx, toks[r.end - 1].idx + len(toks[r.end - 1].text)
        else:  # pure insertion before token r.start
            a = b = toks[r.start].idx if r.start < len(toks) else len(text)
        words = r.text.split(" ") if r.text else []
        _fix_articles_in(words)
        before = text[pos:a]
        if words:
            before = _fix_article_before(before, words[0])
        elif r.end > r.start and before.endswith(" ") and (b >= len(text) or text[b] in " ,.;:!?"):
            before = before[:-1]  # a deletion takes its leading space with it
        out.append(before)
        out.append(" ".join(words))
        pos = b
        # an article at the end of the replacement meets the unchanged word after it
        if words and words[-1].lower() in ("a", "an"):
            nxt = text[pos:].lstrip().split(" ", 1)[0]
            if nxt:
                out[-1] = " ".join(words[:-1] + [match_case(words[-1], indefinite_article(nxt))])
    out.append(text[pos:])
    result = "".join(out)
    if result and text[:1].isupper() and not result[:1].isupper():
        result = result[:1].upper() + result[1:]
    return Candidate(
        text=result,
        family=edit.family,
        rule=edit.rule,
        token_spans=tuple((r.start, r.end) for r in reps),
        char_spans=tuple(_char_span(text, toks, r) for r in reps),
        items=edit.items,
        symmetric_link=edit.symmetric_link,
        priority=edit.priority,
    )


def _fix_articles_in(words: list[str]) -> None:
    for n in range(len(words) - 1):
        w = words[n]
        if (w == "a" or w == "an" or w == "A" or w == "An") and words[n + 1][:1].isalnum():
            words[n] = match_case(w, indefinite_article(words[n + 1]))


def _fix_article_before(before: str, first_word: str) -> str:
    """Fix 'a'/'an' ending the unchanged text ``before`` for the changed word that follows it."""
    stripped = before.rstrip()
    if not first_word[:1].isalnum():
        return before
    for art in ("an", "a"):
        if stripped.lower().endswith(art) and (len(stripped) == len(art) or not stripped[-len(art) - 1].isalnum()):
            word = stripped[-len(art):]
            fixed = match_case(word, indefinite_article(first_word))
            if fixed != word:
                return stripped[: -len(art)] + fixed + before[len(stripped):]
            return before
    return before


def _char_span(text: str, toks: tuple[Tok, ...], r: Replacement) -> tuple[int, int]:
    if r.end <= r.start:
        start = toks[r.start].idx if r.start < len(toks) else len(text)
        return (start, start)
    return (toks[r.start].idx, toks[r.end - 1].idx + len(toks[r.end - 1].text))
