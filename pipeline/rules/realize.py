"""Turn an :class:`Edit` into the text of a negative, working on tokens of the parse.

Substring edits break words ("woman".replace("man", "dog") gives "wodog"), so every edit names token
ranges. Realisation keeps the caption's own whitespace and punctuation, restores sentence-start
capitalisation, and fixes a/an in front of anything that changed.
"""

from __future__ import annotations

from pipeline.records import Candidate, Edit
from pipeline.rules.grammar import indefinite_article, match_case
from pipeline.rules.syntax import Tok


def keeps_case(t: Tok) -> bool:
    """Whether a token keeps its capital letter away from the sentence start (names, "I", acronyms)."""
    return t.pos == "PROPN" or t.text == "I" or (t.text.isupper() and len(t.text) > 1)


def span_words(toks: tuple[Tok, ...], start: int, end: int) -> str:
    """Text of tokens ``[start, end)`` as it may appear mid-sentence (sentence-start case undone)."""
    if end <= start:
        return ""
    first = toks[start]
    text = first.text
    if start == 0 and not keeps_case(first):
        text = text[:1].lower() + text[1:]
    if end - start == 1:
        return text.rstrip()
    return (text + first.ws + "".join([t.text + t.ws for t in toks[start + 1 : end]])).rstrip()


def realize(text: str, toks: tuple[Tok, ...], edit: Edit) -> Candidate:
    """Apply the edit's replacements to the caption ``text`` and return the candidate.

    Unchanged stretches are copied from the caption by character offset (its own spacing and
    punctuation survive); an article is fixed wherever it meets a changed word.
    """
    reps = edit.replacements
    if len(reps) > 1:
        reps = tuple(sorted(reps))  # (start, end, text): no two share a start unless they overlap
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0  # character position in ``text`` copied so far
    prev_end = -1
    n_toks = len(toks)
    for r in reps:
        start, end = r.start, r.end
        if start < prev_end:
            raise ValueError(f"overlapping replacements in {edit.rule}: {reps}")
        prev_end = end
        if end > start:
            last = toks[end - 1]
            a, b = toks[start].idx, last.idx + len(last.text)
        else:  # pure insertion before token r.start
            a = b = toks[start].idx if start < n_toks else len(text)
        spans.append((a, b))
        before = text[pos:a]
        new = r.text
        if new:
            if " " in new:
                words = new.split(" ")
                _fix_articles_in(words)
                new = " ".join(words)
                first, lw = words[0], words[-1]
            else:
                first = lw = new
            out.append(_fix_article_before(before, first))
            # an article at the end of the replacement meets the unchanged word after it
            if lw.lower() in ("a", "an"):
                nxt = text[b:].lstrip().split(" ", 1)[0]
                if nxt:
                    new = new[: len(new) - len(lw)] + match_case(lw, indefinite_article(nxt))
            out.append(new)
        else:
            if end > start and before.endswith(" ") and (b >= len(text) or text[b] in " ,.;:!?"):
                before = before[:-1]  # a deletion takes its leading space with it
            out.append(before)
        pos = b
    out.append(text[pos:])
    result = "".join(out)
    if result and text[:1].isupper() and not result[:1].isupper():
        result = result[:1].upper() + result[1:]
    return Candidate(
        result,
        edit.family,
        edit.rule,
        tuple([(r.start, r.end) for r in reps]),
        tuple(spans),
        edit.items,
        edit.symmetric_link,
        edit.priority,
    )


def _fix_articles_in(words: list[str]) -> None:
    for n in range(len(words) - 1):
        w = words[n]
        if (w == "a" or w == "an" or w == "A" or w == "An") and words[n + 1][:1].isalnum():
            words[n] = match_case(w, indefinite_article(words[n + 1]))


def _fix_article_before(before: str, first_word: str) -> str:
    """Fix 'a'/'an' ending the unchanged text ``before`` for the changed word that follows it."""
    stripped = before.rstrip()
    if stripped[-1:] not in ("a", "A", "n", "N") or not first_word[:1].isalnum():
        return before
    n = len(stripped)
    if stripped[-1:] in ("a", "A") and (n == 1 or not stripped[-2].isalnum()):
        cut = 1
    elif stripped[-2:].lower() == "an" and (n == 2 or not stripped[-3].isalnum()):
        cut = 2
    else:
        return before
    word = stripped[-cut:]
    fixed = match_case(word, indefinite_article(first_word))
    if fixed != word:
        return stripped[:-cut] + fixed + before[n:]
    return before
