"""The text policy: phrase lists, regular expressions and allow-list exceptions for prompts and answers.

Contract:

* Phrases are matched on normalised text (:mod:`seesay.safety.normalize`), so full-width
  letters, case, accents, inserted spaces, punctuation or zero-width characters and the
  traditional forms of the default phrases do not evade them. At most ``max_separator_run``
  visible separators may sit between two letters of a match.
* A phrase that starts (ends) with a Latin letter must start (end) a word in the original
  text: ``porn`` does not fire inside "top ornament", ``illegal`` not inside "illegally"
  unless listed. A trailing ``*`` drops the end condition: ``porn*`` also blocks "pornographic".
  Chinese phrases match anywhere; the allow-list covers their innocent overlaps (``黑色情侣款``).
* A match is excused when an allow-list phrase match covers it entirely.
* Regular expressions run on the folded text with separators kept (see
  :attr:`NormalizedText.folded`); each declares ``max_chars``, the longest text it can match,
  which is what a stream must hold back for it.
* :meth:`TextPolicy.scan` is the single decision procedure: a whole text (``finished=True``)
  and a stream (:mod:`seesay.safety.stream`) are judged by the same code, and besides the
  verdict it says up to which original offset the text is final and clean.
* A policy is immutable; :attr:`TextPolicy.version` is a hash of everything that affects a
  verdict, for cache keys.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from seesay.safety.normalize import NormalizedText, contains_cjk, is_latin_letter, normalize_phrase

Language = Literal["zh", "en"]
DEFAULT_REFUSALS: dict[Language, str] = {"zh": "抱歉，我无法回答这个问题。", "en": "Sorry, I can't help with that."}


@dataclass(frozen=True)
class TextVerdict:
    """The outcome of checking one text.

    Attributes:
        blocked: Whether the text breaks the policy.
        rule: Name of the rule that matched (``"pornography"``), or ``None``.
        pattern: The policy's phrase or regular expression that matched (never the user's text).
        start: Original offset where the blocked match starts.
        end: Original offset just after it.
    """

    blocked: bool
    rule: str | None = None
    pattern: str | None = None
    start: int | None = None
    end: int | None = None


ALLOWED = TextVerdict(False)


@dataclass(frozen=True)
class RegexPattern:
    """One regular expression of a rule.

    Attributes:
        pattern: Python ``re`` syntax, matched against folded text (lower case, NFKC, separators kept).
        max_chars: The longest folded text it can match; a stream holds this many characters back.
    """

    pattern: str
    max_chars: int = 40


@dataclass(frozen=True)
class Rule:
    """A named group of phrases and regular expressions, reported as the rule in verdicts and audits.

    Attributes:
        name: Short identifier (``"illegal"``, ``"cracking"``, ``"pornography"``).
        phrases: Phrases as written; a trailing ``*`` means "and any continuation of the word".
        regexes: Regular expressions (see :class:`RegexPattern`).
    """

    name: str
    phrases: tuple[str, ...] = ()
    regexes: tuple[RegexPattern, ...] = ()


@dataclass(frozen=True)
class Refusals:
    """What a blocked answer is replaced with, per language of the request."""

    zh: str = DEFAULT_REFUSALS["zh"]
    en: str = DEFAULT_REFUSALS["en"]

    def for_language(self, language: Language) -> str:
        return self.zh if language == "zh" else self.en


@dataclass(frozen=True)
class Scan:
    """What :meth:`TextPolicy.scan` found.

    Attributes:
        verdict: Blocked, with the earliest decided match, or :data:`ALLOWED`.
        safe_end: Original offset up to which the text is final and clean: no match, and no
            beginning of one that later text could complete. Equal to the text's length when
            the text is finished and allowed.
    """

    verdict: TextVerdict
    safe_end: int


@dataclass(frozen=True)
class _Phrase:
    key: str  # normalised
    raw: str
    rule: str
    open_end: bool  # trailing * in the policy

    @property
    def word_start(self) -> bool:
        return is_latin_letter(self.key[0])

    @property
    def word_end(self) -> bool:
        return not self.open_end and is_latin_letter(self.key[-1])


@dataclass(frozen=True)
class _Hit:
    verdict: TextVerdict
    decided: bool


@dataclass(frozen=True)
class _Allowances:
    spans: tuple[tuple[int, int], ...]
    pending_from: int | None  # earliest original start of an allow phrase the stream may still complete


def detect_language(text: str) -> Language:
    """``"zh"`` when the text holds a CJK ideograph, else ``"en"``."""
    return "zh" if contains_cjk(text) else "en"


def _compile_phrases(rules: Sequence[Rule]) -> tuple[_Phrase, ...]:
    phrases = []
    for rule in rules:
        for raw in rule.phrases:
            open_end = raw.rstrip().endswith("*")
            key = normalize_phrase(raw.rstrip().rstrip("*"))
            if not key:
                raise ValueError(f"rule {rule.name!r}: phrase {raw!r} has no letters or digits")
            phrases.append(_Phrase(key, raw, rule.name, open_end))
    return tuple(phrases)


def _proper_prefixes(keys: Sequence[str]) -> frozenset[str]:
    return frozenset(key[:n] for key in keys for n in range(1, len(key)))


@dataclass(frozen=True)
class TextPolicy:
    """An operator's text policy (see the module docstring). Build it with :mod:`seesay.safety.policy`.

    Attributes:
        rules: Blocking rules.
        allow: Allow-list phrases; a match they cover entirely is not a block.
        max_separator_run: Most visible separators allowed between two letters of a match.
        refusals: Replacement answers by language.
        source: Where the policy came from (a file path or ``"<default>"``), for messages.
    """

    rules: tuple[Rule, ...]
    allow: tuple[str, ...] = ()
    max_separator_run: int = 3
    refusals: Refusals = Refusals()
    source: str = "<inline>"
    _phrases: tuple[_Phrase, ...] = field(init=False, repr=False, compare=False)
    _allow_keys: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _regexes: tuple[tuple[str, RegexPattern, re.Pattern[str]], ...] = field(init=False, repr=False, compare=False)
    _prefixes: frozenset[str] = field(init=False, repr=False, compare=False)
    _allow_prefixes: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_separator_run < 0:
            raise ValueError(f"max_separator_run must be 0 or more, got {self.max_separator_run}")
        allow_keys = tuple(key for key in (normalize_phrase(p) for p in self.allow) if key)
        regexes = tuple((rule.name, rx, _compile_regex(rule.name, rx)) for rule in self.rules for rx in rule.regexes)
        object.__setattr__(self, "_phrases", _compile_phrases(self.rules))
        object.__setattr__(self, "_allow_keys", allow_keys)
        object.__setattr__(self, "_regexes", regexes)
        object.__setattr__(self, "_prefixes", _proper_prefixes([p.key for p in self._phrases]))
        object.__setattr__(self, "_allow_prefixes", _proper_prefixes(allow_keys))

    @functools.cached_property
    def version(self) -> str:
        """A hash of everything that affects a verdict or a refusal (16 hex digits)."""
        canonical = json.dumps({
            "rules": [[r.name, sorted(r.phrases), sorted((x.pattern, x.max_chars) for x in r.regexes)]
                      for r in self.rules],
            "allow": sorted(self.allow),
            "max_separator_run": self.max_separator_run,
            "refusals": [self.refusals.zh, self.refusals.en],
        }, ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @functools.cached_property
    def longest_phrase(self) -> int:
        """Characters in the longest phrase or allow-list phrase, in normalised form."""
        return max((len(k) for k in [*(p.key for p in self._phrases), *self._allow_keys]), default=0)

    @functools.cached_property
    def max_hold_chars(self) -> int:
        """The most visible characters a stream can hold back for phrases (regular expressions aside)."""
        return self.longest_phrase * (self.max_separator_run + 1)

    @functools.cached_property
    def regex_window(self) -> int:
        """Folded characters a stream holds back for regular expressions (0 without any)."""
        return max((rx.max_chars + 1 for _, rx, _ in self._regexes), default=0)

    def refusal(self, prompt: str) -> str:
        """The refusal in the language of ``prompt`` (Chinese when it holds CJK characters)."""
        return self.refusals.for_language(detect_language(prompt))

    def check(self, text: str) -> TextVerdict:
        """Judge a complete text."""
        return self.scan(NormalizedText(text), finished=True).verdict

    def scan(self, norm: NormalizedText, *, finished: bool, since: int = 0) -> Scan:
        """Judge a text that may still grow (the single decision procedure; see the module docstring).

        Args:
            norm: The text so far, normalised.
            finished: No more text will come; nothing is left undecided.
            since: Original offset before which the text was already judged clean (a stream's
                released part): matches that end there are not judged again.

        Returns:
            The verdict, and the offset up to which the text may be released.
        """
        first = bisect.bisect_left(norm.origin, since)
        hits = [*self._phrase_hits(norm, first, finished), *self._regex_hits(norm, since, finished)]
        allowances = self._allowances(norm, first, finished)
        safe_end = norm.length
        blocks: list[TextVerdict] = []
        for hit in hits:
            assert hit.verdict.end is not None and hit.verdict.start is not None
            if hit.verdict.end <= since or _covered(hit.verdict, allowances.spans):
                continue
            pending_allow = allowances.pending_from is not None and allowances.pending_from <= hit.verdict.start
            if hit.decided and not pending_allow:
                blocks.append(hit.verdict)
            else:
                safe_end = min(safe_end, hit.verdict.start)
        if blocks:
            return Scan(min(blocks, key=lambda v: v.start or 0), since)
        if not finished:
            safe_end = min(safe_end, self._partial_start(norm), self._regex_hold(norm))
        return Scan(ALLOWED, max(safe_end, since))

    def _phrase_hits(self, norm: NormalizedText, first: int, finished: bool) -> Iterator[_Hit]:
        lo = max(0, first - self.longest_phrase)
        for phrase in self._phrases:
            start = norm.text.find(phrase.key, lo)
            while start != -1:
                hit = self._phrase_hit(norm, phrase, start, finished)
                if hit is not None:
                    yield hit
                start = norm.text.find(phrase.key, start + 1)

    def _phrase_hit(self, norm: NormalizedText, phrase: _Phrase, start: int, finished: bool) -> _Hit | None:
        end = start + len(phrase.key)
        if norm.max_gap(start, end) > self.max_separator_run:
            return None
        if phrase.word_start and not norm.word_starts_at(start):
            return None
        ends_word = norm.word_ends_at(end, finished=finished) if phrase.word_end else True
        if ends_word is False:
            return None
        begin, stop = norm.span(start, end)
        return _Hit(TextVerdict(True, phrase.rule, phrase.raw, begin, stop), decided=ends_word is True)

    def _regex_hits(self, norm: NormalizedText, since: int, finished: bool) -> Iterator[_Hit]:
        if not self._regexes:
            return
        # From a window before the released part, so a match longer than its max_chars still blocks.
        lo = max(0, bisect.bisect_left(norm.folded_origin, since) - self.regex_window)
        for rule, rx, compiled in self._regexes:
            for match in compiled.finditer(norm.folded, lo):
                if match.end() == match.start():
                    continue
                begin = norm.folded_origin[match.start()]
                stop = norm.folded_origin[match.end() - 1] + 1
                decided = finished or match.end() < len(norm.folded)
                yield _Hit(TextVerdict(True, rule, rx.pattern, begin, stop), decided)

    def _allowances(self, norm: NormalizedText, first: int, finished: bool) -> _Allowances:
        if not self._allow_keys:
            return _Allowances((), None)
        lo = max(0, first - 2 * self.longest_phrase)
        spans = []
        for key in self._allow_keys:
            start = norm.text.find(key, lo)
            while start != -1:
                if norm.max_gap(start, start + len(key)) <= self.max_separator_run:
                    spans.append(norm.span(start, start + len(key)))
                start = norm.text.find(key, start + 1)
        pending = None if finished else self._suffix_start(norm, self._allow_prefixes, self._longest_allow_prefix,
                                                          word_starts=False)
        return _Allowances(tuple(spans), pending)

    def _partial_start(self, norm: NormalizedText) -> int:
        """Where the longest tail that could still grow into a blocked phrase starts (or the text's end)."""
        start = self._suffix_start(norm, self._prefixes, self._longest_block_prefix, word_starts=True)
        return norm.length if start is None else start

    def _suffix_start(self, norm: NormalizedText, prefixes: frozenset[str], longest: int, *,
                      word_starts: bool) -> int | None:
        """Original start of the longest tail of ``norm`` that is in ``prefixes`` and may still grow, if any."""
        if norm.trailing_gap > self.max_separator_run:
            return None
        size = len(norm.text)
        for length in range(min(longest, size), 0, -1):
            start = size - length
            tail = norm.text[start:]
            if tail not in prefixes or norm.max_gap(start, size) > self.max_separator_run:
                continue
            if word_starts and is_latin_letter(tail[0]) and not norm.word_starts_at(start):
                continue
            return norm.origin[start]
        return None

    @functools.cached_property
    def _longest_block_prefix(self) -> int:
        return max(map(len, self._prefixes), default=0)

    @functools.cached_property
    def _longest_allow_prefix(self) -> int:
        return max(map(len, self._allow_prefixes), default=0)

    def _regex_hold(self, norm: NormalizedText) -> int:
        window = self.regex_window
        if window == 0:
            return norm.length
        if len(norm.folded) < window:
            return 0
        return norm.folded_origin[len(norm.folded) - window]


def _covered(verdict: TextVerdict, spans: Sequence[tuple[int, int]]) -> bool:
    assert verdict.start is not None and verdict.end is not None
    return any(start <= verdict.start and verdict.end <= end for start, end in spans)


def _compile_regex(rule: str, regex: RegexPattern) -> re.Pattern[str]:
    if regex.max_chars < 1:
        raise ValueError(f"rule {rule!r}: max_chars of {regex.pattern!r} must be at least 1")
    try:
        return re.compile(regex.pattern)
    except re.error as exc:
        raise ValueError(f"rule {rule!r}: invalid regular expression {regex.pattern!r}: {exc}") from exc
