"""A real, throw-away ``redis-server`` for tests and benchmarks.

Contract: :class:`RedisServer` starts its own ``redis-server`` on a free localhost port (never
a shared instance), with no persistence (``--save "" --appendonly no``) and its working
directory in a temporary folder, and waits until it answers ``PING``. Tests can then break
it on purpose: :meth:`~RedisServer.kill` (SIGKILL, the port refuses connections),
:meth:`~RedisServer.pause` / :meth:`~RedisServer.resume` (SIGSTOP/SIGCONT: connections hang,
which is what time-boxes are for) and :meth:`~RedisServer.start` again on the same port.
:meth:`~RedisServer.stop` always ends the process it started. It uses only the standard
library, so end-to-end tests and ``bench/`` scripts can use it too (``tests/`` on sys.path).

If no ``redis-server`` binary is found, :class:`RedisServerUnavailable` says how to install
it; fixtures turn that into a skip, which the suite's conftest turns into a failure in CI.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

REDIS_SERVER_ENV = "SEESAY_TEST_REDIS_SERVER"


class RedisServerUnavailable(RuntimeError):
    """No redis-server binary on this machine."""


def find_redis_server() -> str:
    """Path of the ``redis-server`` binary (``$SEESAY_TEST_REDIS_SERVER`` or on ``PATH``).

    Raises:
        RedisServerUnavailable: None was found; the message says how to install one.
    """
    binary = os.environ.get(REDIS_SERVER_ENV) or shutil.which("redis-server")
    if not binary:
        raise RedisServerUnavailable(
            "redis-server is not installed; install it (apt-get install redis-server, "
            f"brew install redis) or point {REDIS_SERVER_ENV} at the binary"
        )
    return binary


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One private redis-server process (see the module docstring).

    Args:
        port: TCP port; a free one by default. Kept across restarts.
        startup_timeout_s: How long :meth:`start` waits for ``PING`` to be answered.
    """

    def __init__(self, port: int | None = None, *, startup_timeout_s: float = 10.0) -> None:
        self.binary = find_redis_server()
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self._workdir = tempfile.TemporaryDirectory(prefix="seesay-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> RedisServer:
        """Start the server on :attr:`port` and wait until it answers."""
        if self.running:
            return self
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self._workdir.name, "--logfile", "", "--protected-mode", "no"]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.ping():
            if self._process.poll() is not None:
                error = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(f"redis-server exited with {self._process.returncode}: {error.strip()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not answer within {self.startup_timeout_s} s")
            time.sleep(0.02)
        return self

    def ping(self, timeout_s: float = 0.5) -> bool:
        """Whether the server answers ``PING`` now (raw RESP, no client library)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL the server (no goodbye to clients) and wait for it to be gone."""
        if self._process is not None:
            self.resume()  # a stopped process dies only once continued on some systems
            self._process.kill()
            self._process.wait(timeout=10)
            if self._process.stderr is not None:
                self._process.stderr.close()
            self._process = None

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing is answered."""
        if self.running and self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.running and self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """End the server if it runs (SIGTERM, then SIGKILL after 5 s)."""
        if self._process is None:
            return
        self.resume()
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)
        if self._process.stderr is not None:
            self._process.stderr.close()
        self._process = None

    def close(self) -> None:
        """:meth:`stop`, then remove the working directory."""
        self.stop()
        self._workdir.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()



@contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A private server for a test fixture; skips (a failure under CI) when redis-server is missing."""
    import pytest

    try:
        server = RedisServer()
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))
    with server:
        yield server
