"""Text normalisation for the content policy, with a map back to the original characters.

Contract: normalisation works one original character at a time, so it can be extended as a
stream grows (:meth:`NormalizedText.append`) and every normalised character knows the
original offset it came from. Each character is

1. NFKC-normalised (full-width ``ＶＩＯＬＡＴＥ`` → ``VIOLATE``, ``①`` → ``1``),
2. case-folded, stripped of accents (NFKD, combining marks dropped),
3. mapped through two small tables: a few Cyrillic/Greek look-alikes → Latin, and the
   traditional → simplified characters the default policy needs (``違`` → ``违``),
4. dropped entirely when it is an invisible format character (zero-width space, joiner …).

The result has two forms: :attr:`NormalizedText.folded` keeps separators (spaces,
punctuation, symbols) for regular expressions, and :attr:`NormalizedText.text` keeps letters
and digits only, so ``违 法``, ``V.I.O.L.A.T.E`` and ``p-o-r-n`` line up with the phrases.
For each kept character the number of visible separators dropped just before it is recorded
(:attr:`NormalizedText.gaps`), so matching can bound how many separators a phrase may hide
and tell where Latin words start and end.
"""

from __future__ import annotations

import unicodedata

# Look-alike letters people swap into Latin words; mapped after case folding.
CONFUSABLES: dict[str, str] = {
    "а": "a", "в": "b", "е": "e", "ѕ": "s", "і": "i", "ј": "j", "к": "k", "м": "m", "н": "h",
    "о": "o", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ԁ": "d", "ɡ": "g",
    "α": "a", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u",
}

# Traditional → simplified, only for characters in the default phrases and allow-list (cheap,
# one character to one character). Operators writing their own phrases can list both forms.
TRADITIONAL_TO_SIMPLIFIED: dict[str, str] = dict(zip(
    "違犯黃網電視頻穢賣註冊機盜號觸偽僞況侶節調緒懷難謎題無會軟體圖與議",
    "违犯黄网电视频秽卖注册机盗号触伪伪况侣节调绪怀难谜题无会软体图与议",
    strict=True,
))

_CJK_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F))


def fold_char(char: str) -> str:
    """One original character in folded form: ``""`` for an invisible format character.

    Args:
        char: A single character.

    Returns:
        Zero or more characters (NFKC can expand: ``ﬁ`` → ``fi``).
    """
    cached = _FOLD_CACHE.get(char)
    if cached is None:
        cached = _fold_uncached(char)
        if len(_FOLD_CACHE) < 65536:
            _FOLD_CACHE[char] = cached
    return cached


_FOLD_CACHE: dict[str, str] = {}


def _fold_uncached(char: str) -> str:
    if unicodedata.category(char) == "Cf":
        return ""
    text = unicodedata.normalize("NFKC", char).casefold()
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = unicodedata.normalize("NFC", text)
    return "".join(TRADITIONAL_TO_SIMPLIFIED.get(c, CONFUSABLES.get(c, c)) for c in text)


def normalize_phrase(phrase: str) -> str:
    """A policy phrase in matching form: folded, letters and digits only."""
    return "".join(c for c in "".join(fold_char(ch) for ch in phrase) if c.isalnum())


def is_latin_letter(char: str) -> bool:
    """True for Latin letters (after folding): those are the ones whose words need boundaries."""
    return char.isalpha() and ord(char) < 0x0250


def contains_cjk(text: str) -> bool:
    """True when ``text`` holds at least one CJK ideograph (how a Chinese request is recognised)."""
    return any(low <= ord(ch) <= high for ch in text for low, high in _CJK_RANGES)


class NormalizedText:
    """A growing text in both normalised forms, each character mapped to its original offset.

    Attributes:
        text: Letters and digits only; what phrases are matched against.
        origin: For each character of ``text``, the offset of the original character it came from.
        gaps: For each character of ``text``, how many visible separators were dropped just before it.
        folded: Folded text with separators kept; what regular expressions are matched against.
        folded_origin: For each character of ``folded``, its original offset.
        length: Original characters consumed so far.
        trailing_gap: Visible separators after the last character of ``text``.
    """

    def __init__(self, text: str = "") -> None:
        self.text = ""
        self.origin: list[int] = []
        self.gaps: list[int] = []
        self.folded = ""
        self.folded_origin: list[int] = []
        self.length = 0
        self.trailing_gap = 0
        if text:
            self.append(text)

    def append(self, delta: str) -> None:
        """Normalise ``delta`` and add it at the end."""
        kept: list[str] = []
        folded: list[str] = []
        for offset, char in enumerate(delta, start=self.length):
            for piece in fold_char(char):
                folded.append(piece)
                self.folded_origin.append(offset)
                if piece.isalnum():
                    kept.append(piece)
                    self.origin.append(offset)
                    self.gaps.append(self.trailing_gap)
                    self.trailing_gap = 0
                else:
                    self.trailing_gap += 1
        self.length += len(delta)
        self.text += "".join(kept)
        self.folded += "".join(folded)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original (start, end) offsets of the normalised characters ``text[start:end]``."""
        return self.origin[start], self.origin[end - 1] + 1

    def max_gap(self, start: int, end: int) -> int:
        """Most separators dropped between two neighbouring characters inside ``text[start:end]``."""
        return max(self.gaps[start + 1 : end], default=0)

    def word_starts_at(self, index: int) -> bool:
        """Whether a Latin word can start at ``text[index]`` (nothing, a separator or a non-Latin char before)."""
        if index == 0 or self.gaps[index] > 0:
            return True
        return not is_latin_letter(self.text[index - 1])

    def word_ends_at(self, end: int, *, finished: bool) -> bool | None:
        """Whether a Latin word can end before ``text[end]``; ``None`` while the stream may still extend it."""
        if end < len(self.text):
            return self.gaps[end] > 0 or not is_latin_letter(self.text[end])
        if self.trailing_gap > 0 or finished:
            return True
        return None

