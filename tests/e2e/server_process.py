"""``seesay serve`` as a subprocess on a free port, for the end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from seesay.engine.config import demo_model_dir

READY_TIMEOUT_S = 180  # the machine may be shared; the demo model itself loads in seconds


def model_dir() -> Path:
    """The model under test: ``SEESAY_E2E_MODEL``, else the built-in demo model."""
    return Path(os.environ.get("SEESAY_E2E_MODEL") or demo_model_dir())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    """One ``seesay serve`` subprocess; its stderr (logs) goes to ``log_path``."""

    def __init__(self, model: Path, log_path: Path, settings: dict[str, Any], args: list[str]) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        env = {k: v for k, v in env.items() if not k.startswith("SEESAY_")}
        if model != demo_model_dir():
            env["SEESAY_MODEL"] = str(model)
        env.update({f"SEESAY_{name.upper()}": str(value) for name, value in settings.items()})
        command = [sys.executable, "-m", "seesay.cli", "serve", "--port", str(self.port), *args]
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.model_name = self._wait_ready()

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"seesay serve exited with {self.process.returncode}:\n{self.log}")
            try:
                ready = httpx.get(f"{self.base_url}/ready", timeout=2)
                if ready.status_code == 200:
                    return str(ready.json()["model"])
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"seesay serve was not ready within {READY_TIMEOUT_S} s:\n{self.log}")

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        return httpx.get(f"{self.base_url}/metrics").text

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@contextmanager
def running_server(
    model: Path, log_path: Path, args: list[str] | None = None, **settings: Any
) -> Iterator[ServerProcess]:
    server = ServerProcess(model, log_path, settings, args or [])
    try:
        yield server
    finally:
        server.stop()
