#!/usr/bin/env bash
# Create or refresh the project's virtualenv (.venv) with seesay and its extras.
# Idempotent: does nothing when the venv is up to date with pyproject.toml.
#   SEESAY_EXTRAS    pip extras to install (default: model,serve,finetune,heif,dev)
#   TORCH_SPEC       which torch to install when none is installed (default: torch==2.13.0)
#   TORCH_INDEX_URL  the package index to take it from (default: chosen as below)
#   VENV, PYTHON     the virtualenv's folder (.venv) and the Python that creates it (python3)
#   --dry-run        print the commands instead of running them (and why this torch, on stderr)
#
# Which torch build: pip's default index gives Linux the CUDA build, a multi-GB download that a
# machine without a GPU never uses. torch is installed first, before anything that depends on it:
#   1. TORCH_INDEX_URL set: from that index (pip install --index-url), GPU or not.
#   2. An NVIDIA GPU (`nvidia-smi -L` lists one), or macOS (PyPI's build is the CPU/MPS one):
#      pip's default index.
#   3. No GPU, and pip's own configuration already offers a CPU build of TORCH_SPEC from local
#      find-links (pip.conf or PIP_FIND_LINKS, as on machines that keep wheels on disk and may
#      have no internet): that one, as configured, with no download. Asked of pip itself with
#      `pip install --dry-run --no-index`, which reads local sources only.
#   4. Otherwise: the CPU build, from https://download.pytorch.org/whl/cpu.
# So a machine with wheels on disk installs offline, and an ordinary one without a GPU never
# downloads the CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
EXTRAS=${SEESAY_EXTRAS:-model,serve,finetune,heif,dev}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}
PYTHON=${PYTHON:-python3}
CPU_INDEX_URL=https://download.pytorch.org/whl/cpu
DRY_RUN=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
    esac
done

run() {  # run a command, or print it in --dry-run (one line, quoted for a POSIX shell)
    if ((!DRY_RUN)); then
        "$@"
        return
    fi
    local arg line=()
    for arg in "$@"; do
        if [[ "$arg" =~ ^[A-Za-z0-9_./:=+,@%-]+$ ]]; then
            line+=("$arg")
        else
            line+=("'${arg//\'/\'\\\'\'}'")
        fi
    done
    echo "${line[*]}"
}

has_nvidia_gpu() {
    nvidia-smi -L 2>/dev/null | grep -q '^GPU '
}

local_cpu_torch() {  # does pip, as configured, offer a CPU build of TORCH_SPEC from local find-links?
    local python=$1
    "$python" -m pip install --dry-run --quiet --no-index --no-deps --ignore-installed --report - "$TORCH_SPEC" \
        2>/dev/null | "$python" -c '
import json, sys
report = json.load(sys.stdin)
sys.exit(not any("+cpu" in item["metadata"]["version"] for item in report["install"]))' 2>/dev/null
}

torch_index_args() {  # the pip arguments that pick torch's build; the reason goes to stderr
    local python=$1
    if [[ -n "$TORCH_INDEX_URL" ]]; then
        echo "setup-venv: $TORCH_SPEC from TORCH_INDEX_URL ($TORCH_INDEX_URL)" >&2
        echo "--index-url $TORCH_INDEX_URL"
    elif has_nvidia_gpu; then
        echo "setup-venv: an NVIDIA GPU: $TORCH_SPEC from pip's index, a CUDA build" >&2
    elif [[ "$(uname -s)" == Darwin ]]; then
        echo "setup-venv: macOS: $TORCH_SPEC from pip's index" >&2
    elif local_cpu_torch "$python"; then
        echo "setup-venv: no NVIDIA GPU: $TORCH_SPEC, a CPU build that pip's configuration offers locally" >&2
    else
        echo "setup-venv: no NVIDIA GPU: $TORCH_SPEC, the CPU build from $CPU_INDEX_URL" >&2
        echo "--index-url $CPU_INDEX_URL"
    fi
}

stamp="$VENV/.seesay-stamp"
want="$(cat pyproject.toml scripts/setup-venv.sh | sha256sum | cut -c1-16) $EXTRAS"
if ((!DRY_RUN)) && [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi
[[ -x "$VENV/bin/python" ]] || run "$PYTHON" -m venv "$VENV"
run "$VENV/bin/python" -m pip install -q --upgrade pip
# torch first: otherwise a dependency asking for it pulls the default index's build (see above).
if [[ ",$EXTRAS," == *",model,"* ]] && ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    probe="$VENV/bin/python"
    [[ -x "$probe" ]] || probe="$PYTHON"  # --dry-run before the venv exists
    read -r -a index_args <<< "$(torch_index_args "$probe")"
    run "$VENV/bin/python" -m pip install -q "$TORCH_SPEC" ${index_args[@]+"${index_args[@]}"}  # bash 3.2 + set -u
fi
run "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
((DRY_RUN)) || echo "$want" > "$stamp"
