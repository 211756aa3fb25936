"""``seesay cache stats`` and ``seesay cache clear``: the response cache of running servers and of Redis.

Contract: both commands talk to each running server named by ``--server`` (default: the
configured ``host:port``) through its admin endpoints (``GET /admin/cache``, ``POST
/admin/cache/clear``, see :mod:`seesay.api.routes.admin`), sending ``--api-key`` (default: the
first configured API key) when the server wants one, and to Redis directly when
``--redis-url`` (or ``SEESAY_REDIS_URL`` / the config file) names it, so Redis can be
inspected and emptied with no server running (the default server is then skipped with a
note if it does not answer). Only a server can report or empty its own in-process cache
(L1): clearing every replica's L1 means naming every replica. The exit status is 0 when
every target answered, 1 otherwise, with one readable line per failure on stderr. httpx and
redis-py are imported when used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from seesay.cache.redis import RedisCache, RedisCacheConfig, SharedCacheUnavailableError, redacted_url
from seesay.config import load_settings

SERVER_TIMEOUT_S = 10.0


@dataclass
class Report:
    """What one command found, target by target."""

    results: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def add_cache_commands(commands: Any) -> None:
    """Register ``cache stats`` and ``cache clear`` on the ``seesay`` command's subparsers."""
    cache = commands.add_parser("cache", help="inspect or empty the response cache",
                                description="Inspect or empty the response cache of running servers and of Redis.")
    actions = cache.add_subparsers(title="commands", metavar="COMMAND")
    stats = actions.add_parser("stats", help="hits, misses, stores and entries per tier")
    _add_targets(stats)
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(func=run_stats)
    clear = actions.add_parser("clear", help="empty the servers' in-process caches and Redis")
    _add_targets(clear)
    clear.set_defaults(func=run_clear)
    cache.set_defaults(func=lambda _args: cache.print_help(sys.stderr) or 2)


def _add_targets(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", action="append", metavar="URL",
                        help="a running seesay server, e.g. http://10.0.0.5:8000 (repeatable; default: the "
                        "configured host and port)")
    parser.add_argument("--api-key", help="API key for the servers' admin endpoints (default: the first "
                        "configured key)")
    parser.add_argument("--redis-url", help="the shared Redis cache (default: $SEESAY_REDIS_URL)")
    parser.add_argument("--config", metavar="FILE", help="TOML or YAML settings file (default: $SEESAY_CONFIG)")


def run_stats(args: argparse.Namespace) -> int:
    report = _ask_all(_Targets.from_args(args), "GET", "/admin/cache", clear=False)
    if args.json:
        print(json.dumps({**report.results, "failures": report.failures}, ensure_ascii=False))
    else:
        for name, result in report.results.items():
            print(f"{name}: {json.dumps(result, ensure_ascii=False)}")
    return _finish(report)


def run_clear(args: argparse.Namespace) -> int:
    report = _ask_all(_Targets.from_args(args), "POST", "/admin/cache/clear", clear=True)
    for name, result in report.results.items():
        print(f"{name}: cleared {json.dumps(result)}")
    return _finish(report)


@dataclass(frozen=True)
class _Targets:
    servers: list[str]
    api_key: str | None
    redis: RedisCacheConfig | None
    default_server: bool  # no --server given: the configured address is tried

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> _Targets:
        settings = load_settings(args.config, redis_url=args.redis_url)
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        keys = settings.all_api_keys()
        return cls(servers=args.server or [f"http://{host}:{settings.port}"],
                   api_key=args.api_key or (keys[0] if keys else None), redis=settings.redis_cache_config(),
                   default_server=not args.server)


def _ask_all(targets: _Targets, method: str, path: str, *, clear: bool) -> Report:
    report = Report()
    optional = targets.default_server and targets.redis is not None
    for url in targets.servers:
        _ask_server(report, url, method, path, targets.api_key, optional=optional)
    if targets.redis is not None:
        _ask_redis(report, targets.redis, clear=clear)
    return report


def _ask_server(report: Report, url: str, method: str, path: str, api_key: str | None, *, optional: bool) -> None:
    import httpx

    name = f"server {url}"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.request(method, url.rstrip("/") + path, headers=headers, timeout=SERVER_TIMEOUT_S)
    except httpx.HTTPError as exc:
        problem = f"{name} cannot be reached ({type(exc).__name__}); is `seesay serve` running there?"
        (report.notes if optional else report.failures).append(problem)
        return
    if response.status_code == 401:
        report.failures.append(f"{name} refused the API key; pass one with --api-key")
    elif response.status_code != 200:
        report.failures.append(f"{name} answered {response.status_code}: {_error_message(response)}")
    else:
        report.results[name] = response.json()


def _error_message(response: Any) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def _ask_redis(report: Report, config: RedisCacheConfig, *, clear: bool) -> None:
    name = f"redis {redacted_url(config.url)} (namespace {config.namespace})"
    try:
        entries = asyncio.run(_redis_call(config, clear=clear))
    except SharedCacheUnavailableError as exc:
        report.failures.append(str(exc))
        return
    report.results[name] = {"deleted" if clear else "entries": entries}


async def _redis_call(config: RedisCacheConfig, *, clear: bool) -> int:
    tier = RedisCache(config)
    try:
        return await (tier.clear() if clear else tier.count())
    finally:
        await tier.close()


def _finish(report: Report) -> int:
    for note in report.notes:
        print(f"seesay: note: {note}", file=sys.stderr)
    for failure in report.failures:
        print(f"seesay: error: {failure}", file=sys.stderr)
    return 1 if report.failures else 0
