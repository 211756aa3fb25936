"""``seesay serve``: run the HTTP API with uvicorn.

Settings come from ``--config FILE`` / ``SEESAY_CONFIG``, ``SEESAY_*`` variables and the
flags here, in rising priority (see :mod:`seesay.config`). The safety screens are loaded
first: one that cannot load (an unknown detector, NudeNet not installed, a broken policy
file) stops the command with a message saying how to fix it, before the model is loaded and
before anything listens. On SIGTERM or Ctrl-C uvicorn stops accepting connections and waits
up to ``drain_timeout_s`` for open requests; the app's lifespan then drains the scheduler and
closes the cache and the engine, and the process exits 0 (1 when the app failed to start, for
example because the model could not be loaded).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from contextlib import closing
from types import FrameType
from typing import Any

from seesay.config import Settings, load_settings


def add_serve_command(subparsers: Any) -> None:
    """Register ``serve`` on the ``seesay`` command's subparsers."""
    serve = subparsers.add_parser(
        "serve",
        help="run the OpenAI-compatible HTTP API",
        description="Serve /v1/chat/completions, /v1/vqa, /v1/models, /v1/load_lora_adapter, "
        "/v1/unload_lora_adapter, /health, /ready, /metrics and /admin/cache. "
        "Every setting can also come from a SEESAY_* environment variable or a TOML/YAML file.",
    )
    serve.add_argument("--host", help="address to listen on (default: $SEESAY_HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: $SEESAY_PORT, else 8000)")
    serve.add_argument("--model", help="hub id or local folder (default: $SEESAY_MODEL, else the built-in demo model)")
    serve.add_argument("--config", metavar="FILE", help="TOML or YAML settings file (default: $SEESAY_CONFIG)")
    serve.add_argument("--redis-url", help="shared response cache, e.g. redis://127.0.0.1:6379/0 "
                       "(default: $SEESAY_REDIS_URL; unset: in-process cache only)")
    serve.add_argument("--lora-modules", nargs="+", metavar="NAME=PATH",
                       help="LoRA adapters to serve, each as its own model id: name=path, or vLLM's JSON form "
                       "'{\"name\": ..., \"path\": ...}' (default: $SEESAY_LORA_MODULES)")
    serve.add_argument("--max-loras", type=int, help="LoRA adapters loaded at once (default: $SEESAY_MAX_LORAS, "
                       "else 4); loading one more unloads the least recently used idle one")
    serve.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; 0 after a clean shutdown, 1 if the app failed to start."""
    from seesay.api.app import build_app
    from seesay.safety import SafetyGate

    settings = load_settings(args.config, host=args.host, port=args.port, model=args.model,
                             redis_url=args.redis_url, lora_modules=args.lora_modules, max_loras=args.max_loras)
    configure_logging(settings)
    with closing(SafetyGate.from_config(settings.safety_config())) as gate:  # fails closed, with the fix
        return _serve(build_app(settings, gate=gate), settings)


def _serve(app: Any, settings: Settings) -> int:
    """Run ``app`` under uvicorn with the settings' address and drain time."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,  # keep the logging set up below
        access_log=False,  # the app writes its own structured line per request
        timeout_graceful_shutdown=int(settings.drain_timeout_s) or None,
    )
    server = uvicorn.Server(config)
    # uvicorn drains on SIGTERM, then raises SIGTERM again so the default action kills the
    # process; absorbing that second one lets a drained server exit with status 0.
    previous = signal.signal(signal.SIGTERM, _after_drain)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0 if server.started else 1


def _after_drain(signum: int, frame: FrameType | None) -> None:
    """SIGTERM re-raised by uvicorn after its graceful shutdown: nothing is left to do."""


def configure_logging(settings: Settings) -> None:
    """Service logs at the configured level on stderr; access lines as bare JSON objects."""
    level = logging.DEBUG if settings.debug else getattr(logging, settings.log_level.upper())
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("seesay", "uvicorn"):
        logging.getLogger(name).setLevel(level)
    access = logging.getLogger("seesay.access")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.handlers = [handler]
    access.setLevel(logging.INFO)
    access.propagate = False
