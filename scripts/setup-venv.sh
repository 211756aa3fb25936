#!/usr/bin/env bash
# Create or refresh the project's virtualenv (.venv) with seesay and its extras.
# Idempotent: does nothing when the venv is up to date with pyproject.toml.
#   SEESAY_EXTRAS   pip extras to install (default: model,serve,heif,dev)
#   TORCH_SPEC      how to get torch when none is installed (default: torch==2.13.0, the CPU
#                   build on this machine's disk; elsewhere pip picks the right build for the host)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${SEESAY_EXTRAS:-model,serve,heif,dev}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PYTHON=${PYTHON:-python3}

stamp="$VENV/.seesay-stamp"
want="$(cat pyproject.toml scripts/setup-venv.sh | sha256sum | cut -c1-16) $EXTRAS"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first: otherwise a dependency asking for it pulls a multi-GB CUDA build on CPU machines.
if [[ ",$EXTRAS," == *",model,"* ]] && ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
fi
"$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
echo "$want" > "$stamp"
