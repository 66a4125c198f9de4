"""Small English morphology: articles, noun number, subject-verb agreement.

Pure string functions with explicit irregular tables, so every rule that edits a caption fixes
agreement the same way and tests can pin the behaviour word by word.
"""

from __future__ import annotations

_IRREGULAR_PLURALS = {
    "man": "men", "woman": "women", "child": "children", "person": "people", "foot": "feet",
    "tooth": "teeth", "mouse": "mice", "goose": "geese", "ox": "oxen", "policeman": "policemen",
    "fireman": "firemen", "businessman": "businessmen", "gentleman": "gentlemen",
    "knife": "knives", "leaf": "leaves", "shelf": "shelves", "loaf": "loaves", "wolf": "wolves",
    "half": "halves", "calf": "calves", "life": "lives", "wife": "wives", "scarf": "scarves",
    "sheep": "sheep", "deer": "deer", "fish": "fish", "bison": "bison", "moose": "moose",
    "series": "series", "species": "species", "aircraft": "aircraft", "glasses": "glasses",
    "scissors": "scissors", "pants": "pants", "jeans": "jeans", "shorts": "shorts",
    "cactus": "cacti", "tomato": "tomatoes", "potato": "potatoes", "hero": "heroes",
    "zebra": "zebras", "giraffe": "giraffes", "ski": "skis", "bus": "buses", "lens": "lenses",
}
_IRREGULAR_ENDINGS = ("woman", "man", "child", "person", "knife")
_IRREGULAR_SINGULARS = {v: k for k, v in _IRREGULAR_PLURALS.items() if v != k}

#: words whose spelling starts with a vowel letter but a consonant sound, and vice versa
_CONSONANT_SOUND = ("uni", "use", "usu", "uti", "uro", "eu", "one", "once", "ewe", "u-")
_VOWEL_SOUND = ("hour", "honest", "honor", "honour", "heir", "herb")

#: finite verb forms that agree with the subject: singular <-> plural
_AGREE_SG_TO_PL = {"is": "are", "was": "were", "has": "have", "does": "do", "'s": "'re"}
_AGREE_PL_TO_SG = {v: k for k, v in _AGREE_SG_TO_PL.items()}


def indefinite_article(word: str) -> str:
    """'a' or 'an' for the word that follows, by sound where spelling misleads."""
    w = word.lower()
    if not w:
        return "a"
    if w.startswith(_VOWEL_SOUND):
        return "an"
    if w.startswith(_CONSONANT_SOUND):
        return "a"
    if len(w) == 1 or (word.isupper() and len(word) <= 4):  # letters and acronyms: "an X-ray", "an SUV"
        return "an" if w[0] in "aefhilmnorsx" else "a"
    return "an" if w[0] in "aeiou" else "a"


def match_case(template: str, word: str) -> str:
    """Give ``word`` the capitalisation pattern of ``template`` (lower, Title or UPPER)."""
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def pluralize(noun: str) -> str:
    low = noun.lower()
    if low in _IRREGULAR_PLURALS:
        return match_case(noun, _IRREGULAR_PLURALS[low])
    if low.endswith(_IRREGULAR_ENDINGS):  # compounds ending in an irregular: "snowman"
        for sg in _IRREGULAR_ENDINGS:
            if low.endswith(sg):
                return noun[: len(noun) - len(sg)] + _IRREGULAR_PLURALS[sg]
    if low.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if low.endswith("y") and len(low) > 1 and low[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def singularize(noun: str) -> str:
    low = noun.lower()
    if low in _IRREGULAR_SINGULARS:
        return match_case(noun, _IRREGULAR_SINGULARS[low])
    if low in _IRREGULAR_PLURALS:  # invariant: sheep, fish
        return noun
    if low.endswith("men") and len(low) > 3:
        return noun[:-3] + "man"
    if low.endswith("ies") and len(low) > 3:
        return noun[:-3] + "y"
    if low.endswith(("ches", "shes", "sses", "xes", "zes")):
        return noun[:-2]
    if low.endswith("s") and not low.endswith("ss"):
        return noun[:-1]
    return noun


def inflect_noun(lemma: str, plural: bool) -> str:
    return pluralize(lemma) if plural else lemma


def _base_of_third_person(word: str) -> str:
    """"rides" -> "ride", "watches" -> "watch", "flies" -> "fly", "goes" -> "go"."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "ches", "shes", "xes", "zes", "oes")):
        return word[:-2]
    return word[:-1]


def agree_verb(word: str, lemma: str, plural: bool) -> str | None:
    """The form of a finite present/past verb that agrees with a subject of the given number.

    Returns None when ``word`` is not a form that agrees (participles, modals, past tense of
    ordinary verbs): those need no change.
    """
    low = word.lower()
    table = _AGREE_SG_TO_PL if plural else _AGREE_PL_TO_SG
    if low in table:
        return match_case(word, table[low])
    already = set(_AGREE_SG_TO_PL.values()) if plural else set(_AGREE_SG_TO_PL)
    if low in already:
        return word
    if low in ("am", "can", "could", "will", "would", "should", "may", "might", "must"):
        return None
    lem = lemma.lower() or low
    if plural:
        # third-person singular -s form -> base form, from the word itself (the lemmatiser gives
        # "rid" for "rides")
        if low != lem and low.endswith("s"):
            return match_case(word, _base_of_third_person(low))
        return None
    if low == lem:  # base form -> third person singular
        if lem == "have":
            return match_case(word, "has")
        if lem == "be":
            return match_case(word, "is")
        if lem == "do":
            return match_case(word, "does")
        if lem == "go":
            return match_case(word, "goes")
        if lem.endswith(("s", "x", "z", "ch", "sh", "o")):
            return match_case(word, lem + "es")
        if lem.endswith("y") and len(lem) > 1 and lem[-2] not in "aeiou":
            return match_case(word, lem[:-1] + "ies")
        return match_case(word, lem + "s")
    return None
