# The two commands a new user needs: `make serve` and `make test`. Both set up .venv first.
PY := .venv/bin/python
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: venv need-redis serve ask test test-fast lint bench clean

venv:
	@scripts/setup-venv.sh

serve: venv
	.venv/bin/seesay serve

ask: venv
	.venv/bin/seesay ask example:red-tshirt "What colour is this item?"

# The suite starts its own redis-server instances on free ports (tests/redis_server.py): say so
# before anything is installed rather than deep inside pytest.
REDIS_SERVER = $${SEESAY_TEST_REDIS_SERVER:-redis-server}
need-redis:
	@command -v "$(REDIS_SERVER)" >/dev/null || { \
	    echo "make test needs redis-server, which is not installed: apt-get install redis-server" \
	        "(Debian/Ubuntu) or brew install redis (macOS), or point SEESAY_TEST_REDIS_SERVER at the binary" >&2; \
	    exit 1; }

test: need-redis venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: venv
	.venv/bin/ruff check src tests bench
	.venv/bin/mypy

bench: venv
	HF_HUB_OFFLINE=1 $(PY) bench/engine.py

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
