"""Policy files: the operator's TOML or YAML text policy, validated, and reloaded when it changes.

Contract: :func:`load_policy` turns a file into a :class:`~seesay.safety.text.TextPolicy` or
raises :class:`~seesay.errors.SafetyConfigError` naming the file, the key and the fix;
a key the policy does not know is an error, so a typo never silently weakens screening.
:func:`default_policy` is the Chinese + English policy shipped in the package
(``default_policy.toml``, which documents the format). :class:`PolicyFile` keeps the current
policy of one file and reloads it when its modification time or size changes (checked at
most once per ``check_interval_s``, one ``stat`` call); a file that fails to reload is
logged and the previous policy stays in force, because screening never falls open.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from seesay.errors import MissingDependencyError, SafetyConfigError
from seesay.safety.text import Refusals, RegexPattern, Rule, TextPolicy

logger = logging.getLogger("seesay.safety")

DEFAULT_SOURCE = "<default>"
_TOP_KEYS = frozenset({"max_separator_run", "refusal", "rule", "allow"})
_RULE_KEYS = frozenset({"name", "phrases", "regexes"})


def default_policy() -> TextPolicy:
    """The policy shipped with seesay (``seesay/safety/default_policy.toml``)."""
    return _default_policy()


@functools.cache
def _default_policy() -> TextPolicy:
    text = resources.files("seesay.safety").joinpath("default_policy.toml").read_text(encoding="utf-8")
    return parse_policy(tomllib.loads(text), DEFAULT_SOURCE)


def load_policy(path: str | os.PathLike[str]) -> TextPolicy:
    """Read and validate a policy file (``.toml``, or ``.yaml``/``.yml`` with PyYAML installed).

    Raises:
        SafetyConfigError: The file is missing, unreadable, malformed or invalid; the message
            says which and how to fix it.
    """
    file = Path(path)
    try:
        raw = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SafetyConfigError(
            f"text policy file {file} cannot be read ({exc.strerror or exc}); fix the path, or leave the "
            "policy file unset to use seesay's default policy"
        ) from exc
    data = _parse_document(raw, file)
    return parse_policy(data, str(file))


def _parse_document(raw: str, file: Path) -> Mapping[str, Any]:
    if file.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:
            raise SafetyConfigError(str(MissingDependencyError("pyyaml", "serve", "A YAML text policy"))) from exc
        try:
            data = yaml.safe_load(raw) or {}
        except yaml.YAMLError as exc:
            raise SafetyConfigError(f"text policy file {file} is not valid YAML: {exc}") from exc
    else:
        try:
            data = tomllib.loads(raw)
        except tomllib.TOMLDecodeError as exc:
            raise SafetyConfigError(f"text policy file {file} is not valid TOML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise SafetyConfigError(f"text policy file {file} must hold a table of settings, not {type(data).__name__}")
    return data


def parse_policy(data: Mapping[str, Any], source: str) -> TextPolicy:
    """Build a policy from a parsed document (the format of ``default_policy.toml``).

    Raises:
        SafetyConfigError: An unknown key, a value of the wrong type, an empty phrase or an
            invalid regular expression; the message names ``source`` and the key.
    """
    where = f"text policy {source}"
    _reject_unknown(data, _TOP_KEYS, where)
    try:
        rules = tuple(_rule(entry, f"{where}, rule #{i + 1}") for i, entry in enumerate(_list(data, "rule", where)))
        allow_table = data.get("allow", {})
        if not isinstance(allow_table, Mapping):
            raise SafetyConfigError(f"{where}: [allow] must be a table with a 'phrases' list")
        _reject_unknown(allow_table, frozenset({"phrases"}), f"{where}, [allow]")
        allow = tuple(_strings(allow_table, "phrases", f"{where}, [allow]"))
        refusals = _refusals(data.get("refusal", {}), where)
        max_run = data.get("max_separator_run", 3)
        if not isinstance(max_run, int) or isinstance(max_run, bool):
            raise SafetyConfigError(f"{where}: max_separator_run must be a whole number, got {max_run!r}")
        return TextPolicy(rules, allow, max_run, refusals, source)
    except ValueError as exc:
        raise SafetyConfigError(f"{where}: {exc}") from exc


def _reject_unknown(table: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise SafetyConfigError(f"{where}: unknown key {unknown[0]!r}; the keys are {', '.join(sorted(known))}")


def _list(table: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = table.get(key, [])
    if not isinstance(value, list):
        raise SafetyConfigError(f"{where}: {key!r} must be a list, got {type(value).__name__}")
    return value


def _strings(table: Mapping[str, Any], key: str, where: str) -> list[str]:
    values = _list(table, key, where)
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise SafetyConfigError(f"{where}: every entry of {key!r} must be a non-empty string, got {value!r}")
    return values


def _rule(entry: Any, where: str) -> Rule:
    if not isinstance(entry, Mapping):
        raise SafetyConfigError(f"{where}: a rule must be a table with name, phrases and regexes")
    _reject_unknown(entry, _RULE_KEYS, where)
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise SafetyConfigError(f"{where}: every rule needs a name (a short identifier such as 'illegal')")
    regexes = tuple(_regex(item, f"{where} ({name})") for item in _list(entry, "regexes", where))
    return Rule(name.strip(), tuple(_strings(entry, "phrases", f"{where} ({name})")), regexes)


def _regex(item: Any, where: str) -> RegexPattern:
    if isinstance(item, str):
        return RegexPattern(item)
    if isinstance(item, Mapping) and isinstance(item.get("pattern"), str):
        _reject_unknown(item, frozenset({"pattern", "max_chars"}), where)
        max_chars = item.get("max_chars", RegexPattern.max_chars)
        if not isinstance(max_chars, int) or isinstance(max_chars, bool):
            raise SafetyConfigError(f"{where}: max_chars must be a whole number, got {max_chars!r}")
        return RegexPattern(item["pattern"], max_chars)
    raise SafetyConfigError(f"{where}: a regex is a string or a table {{ pattern = '...', max_chars = 40 }}")


def _refusals(table: Any, where: str) -> Refusals:
    if not isinstance(table, Mapping):
        raise SafetyConfigError(f"{where}: [refusal] must be a table with zh and en")
    _reject_unknown(table, frozenset({"zh", "en"}), f"{where}, [refusal]")
    values = {key: table.get(key, getattr(Refusals, key)) for key in ("zh", "en")}
    for key, value in values.items():
        if not isinstance(value, str) or not value.strip():
            raise SafetyConfigError(f"{where}: refusal.{key} must be a non-empty string")
    return Refusals(**values)


class PolicyFile:
    """The current policy of one file, reloaded when the file changes (see the module docstring).

    Args:
        path: The operator's policy file; ``None`` for the default policy (never reloaded).
        check_interval_s: Seconds between two looks at the file's modification time.
        clock: Monotonic clock (tests pass a fake).

    Raises:
        SafetyConfigError: The file cannot be loaded at start (the service must not start).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, check_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path) if path is not None else None
        self.check_interval_s = check_interval_s
        self.last_error: str | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._policy = default_policy() if self.path is None else load_policy(self.path)
        self._checked_at = clock()

    def current(self) -> TextPolicy:
        """The policy in force now, reloading the file first if it changed."""
        if self.path is not None and self._clock() - self._checked_at >= self.check_interval_s:
            with self._lock:
                if self._clock() - self._checked_at >= self.check_interval_s:
                    self._reload_if_changed()
        return self._policy

    def _reload_if_changed(self) -> None:
        assert self.path is not None
        self._checked_at = self._clock()
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        try:
            self._policy = load_policy(self.path)
        except SafetyConfigError as exc:
            self.last_error = exc.message
            logger.error("text policy not reloaded, the previous one stays in force: %s", exc.message)
        else:
            self.last_error = None
            logger.info("text policy reloaded from %s (version %s)", self.path, self._policy.version)
        self._stamp = stamp

    def _file_stamp(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size
