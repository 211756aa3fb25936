"""End-to-end fixtures: ``seesay serve`` in a subprocess on a free port, with the demo model.

The model is the built-in demo model (``src/seesay/demo/model``); ``SEESAY_E2E_MODEL`` points
the tests at another local Qwen-VL checkpoint. Servers are configured the way operators do
it: through ``SEESAY_*`` environment variables (and one through ``--config``). Tests of the
shared cache start their own ``redis-server`` on a free port (``tests/redis_server.py``); where
none is installed they skip, which the suite's conftest turns into a failure in CI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from server_process import ServerProcess, model_dir, running_server

from redis_server import RedisServer, running_redis


@pytest.fixture(scope="session")
def model_path() -> Path:
    path = model_dir()
    if not (path / "config.json").is_file():
        pytest.skip(f"no model at {path}: build the demo model with `seesay demo build`, or set SEESAY_E2E_MODEL")
    return path


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with the default batching settings."""
    log = tmp_path_factory.mktemp("server") / "serve.log"
    with running_server(model_path, log, max_batch_size=8, max_wait_ms=5) as process:
        yield process


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    """A private redis-server on a free port, for one test module."""
    with running_redis() as server:
        yield server
