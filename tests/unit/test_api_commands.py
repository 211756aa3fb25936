"""``seesay serve``: flags, settings and the uvicorn configuration (uvicorn itself is faked)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from pathlib import Path
from typing import Any, ClassVar

import pytest
import uvicorn

from seesay.api.commands import add_serve_command, configure_logging
from seesay.config import ConfigError, load_settings
from seesay.safety import SafetyConfigError


class FakeServer:
    """Stands in for ``uvicorn.Server``: records its config, runs nothing."""

    instances: ClassVar[list[FakeServer]] = []

    def __init__(self, config: uvicorn.Config) -> None:
        self.config = config
        self.started = False
        self.sigterm_handler: Any = None
        FakeServer.instances.append(self)

    def run(self) -> None:
        self.sigterm_handler = signal.getsignal(signal.SIGTERM)
        self.started = True


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="seesay")
    add_serve_command(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


@pytest.fixture(autouse=True)
def fake_uvicorn(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("SEESAY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SEESAY_SAFETY_IMAGE_DETECTOR", "flag")  # NudeNet is for the tests about it
    FakeServer.instances.clear()
    monkeypatch.setattr(uvicorn, "Server", FakeServer)


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "seesay.yaml"
    config.write_text("host: 0.0.0.0\nport: 9000\ndrain_timeout_s: 12\n")
    args = parse("--port", "9100", "--config", str(config))
    before = signal.getsignal(signal.SIGTERM)
    assert args.func(args) == 0
    server = FakeServer.instances[0]
    assert (server.config.host, server.config.port) == ("0.0.0.0", 9100)
    assert server.config.timeout_graceful_shutdown == 12 and server.config.access_log is False
    assert server.sigterm_handler not in (signal.SIG_DFL, before)  # absorbs uvicorn's re-raised SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before


def test_invalid_settings_stop_before_serving() -> None:
    args = parse("--port", "99999")
    with pytest.raises(ConfigError, match="port"):
        args.func(args)
    assert FakeServer.instances == []


def test_the_redis_url_flag_sets_the_shared_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Any] = []
    monkeypatch.setattr("seesay.api.app.build_app", lambda settings, **kw: built.append(settings) or object())
    args = parse("--redis-url", "redis://10.0.0.9:6379/1")
    assert args.func(args) == 0
    assert built[0].redis_url == "redis://10.0.0.9:6379/1"


def test_a_detector_that_cannot_load_stops_serve_before_the_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEESAY_SAFETY_IMAGE_DETECTOR", "bogus")
    args = parse()
    with pytest.raises(SafetyConfigError, match="unknown image detector 'bogus'"):
        args.func(args)
    assert FakeServer.instances == []


@pytest.fixture
def restore_logging() -> Any:
    loggers = [logging.getLogger(name) for name in ("seesay", "seesay.access", "uvicorn")]
    saved = [(lg, lg.level, list(lg.handlers), lg.propagate) for lg in loggers]
    yield
    for lg, level, handlers, propagate in saved:
        lg.setLevel(level)
        lg.handlers = handlers
        lg.propagate = propagate


@pytest.mark.usefixtures("restore_logging")
def test_access_lines_are_bare_json_on_their_own_logger() -> None:
    configure_logging(load_settings(log_level="warning"))
    access = logging.getLogger("seesay.access")
    assert access.level == logging.INFO and not access.propagate
    assert access.handlers[0].formatter is not None
    assert access.handlers[0].formatter.format(logging.makeLogRecord({"msg": '{"a": 1}'})) == '{"a": 1}'
    assert logging.getLogger("seesay").level == logging.WARNING
