"""The set-up does what the README says: which torch build it installs, and `make test` without redis-server.

``scripts/setup-venv.sh --dry-run`` prints the commands it would run, so each case runs it with
a fake ``nvidia-smi`` first on ``PATH`` and pip's configuration replaced (``PIP_CONFIG_FILE``
set to the null device, ``PIP_FIND_LINKS`` a folder of the test's own), and reads the torch
command. Nothing is installed or downloaded: pip is asked with ``--dry-run --no-index``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "scripts" / "setup-venv.sh"
README = ROOT / "README.md"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
LISTS_A_GPU = "#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-00000000-0000-0000-0000-000000000000)'\n"
NO_GPU = "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'\nexit 9\n"


def fake_wheel(folder: Path, version: str) -> Path:
    """A minimal, valid ``torch`` wheel: enough for pip to resolve it from find-links."""
    folder.mkdir(exist_ok=True)
    path = folder / f"torch-{version}-py3-none-any.whl"
    info = f"torch-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("torch/__init__.py", "")
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
        wheel.writestr(f"{info}/WHEEL",
                       "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    return path


def dry_run(tmp_path: Path, nvidia_smi: str, find_links: Path | None = None, **env: str) -> list[list[str]]:
    """The commands ``setup-venv.sh --dry-run`` prints, each split like a shell would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "nvidia-smi").write_text(nvidia_smi)
    (bin_dir / "nvidia-smi").chmod(0o755)
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("PIP_", "TORCH_", "SEESAY_")) and k not in ("VENV", "PYTHON")}
    clean |= {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PIP_CONFIG_FILE": os.devnull,
              "PIP_DISABLE_PIP_VERSION_CHECK": "1", "VENV": str(tmp_path / "venv"), "PYTHON": sys.executable}
    if find_links is not None:
        clean["PIP_FIND_LINKS"] = str(find_links)
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True,
                          env=clean | env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return [shlex.split(line) for line in done.stdout.splitlines()]


def torch_command(commands: list[list[str]], spec: str = "torch==2.13.0") -> list[str]:
    [command] = [c for c in commands if spec in c]
    return command


def index_of(command: list[str]) -> str | None:
    return command[command.index("--index-url") + 1] if "--index-url" in command else None


def test_without_a_gpu_torch_comes_from_the_cpu_index(tmp_path: Path) -> None:
    commands = dry_run(tmp_path, NO_GPU, find_links=tmp_path / "empty")
    assert index_of(torch_command(commands)) == CPU_INDEX
    # torch goes in before the package, whose dependencies would otherwise pull the default build.
    assert commands.index(torch_command(commands)) < next(i for i, c in enumerate(commands) if "-e" in c)


def test_with_a_gpu_torch_comes_from_pip_s_index(tmp_path: Path) -> None:
    assert index_of(torch_command(dry_run(tmp_path, LISTS_A_GPU))) is None


def test_without_a_gpu_a_local_cpu_wheel_that_pip_is_configured_with_is_used_offline(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    fake_wheel(wheels, "2.13.0+cpu")
    assert index_of(torch_command(dry_run(tmp_path, NO_GPU, find_links=wheels))) is None


def test_a_local_wheel_that_is_not_a_cpu_build_does_not_count(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    fake_wheel(wheels, "2.13.0")
    assert index_of(torch_command(dry_run(tmp_path, NO_GPU, find_links=wheels))) == CPU_INDEX


def test_torch_spec_and_index_url_override(tmp_path: Path) -> None:
    commands = dry_run(tmp_path, LISTS_A_GPU, TORCH_SPEC="torch==2.9.0", TORCH_INDEX_URL="https://example.invalid/i")
    assert index_of(torch_command(commands, "torch==2.9.0")) == "https://example.invalid/i"


def test_extras_override_and_no_torch_without_the_model_extra(tmp_path: Path) -> None:
    commands = dry_run(tmp_path, NO_GPU, SEESAY_EXTRAS="serve")
    assert not [c for c in commands if "torch==2.13.0" in c]
    assert commands[-1][-2:] == ["-e", ".[serve]"]


def test_the_readme_names_each_setting_the_set_up_reads() -> None:
    script = SCRIPT.read_text(encoding="utf-8")
    readme = README.read_text(encoding="utf-8")
    for name in ("TORCH_SPEC", "TORCH_INDEX_URL", "SEESAY_EXTRAS"):
        assert f"`{name}`" in readme, f"the README does not mention {name}"
        assert re.search(rf"^#\s+{name}\s", script, flags=re.M), f"setup-venv.sh's header does not document {name}"
        assert f"${{{name}:-" in script, f"setup-venv.sh does not read {name}"
    assert CPU_INDEX in readme and "scripts/setup-venv.sh --dry-run" in readme
    assert "`make test` needs `redis-server`" in readme


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make, as `make test` does")
def test_make_test_without_redis_server_stops_at_once_saying_how_to_install_it(tmp_path: Path) -> None:
    # A copy of the Makefile alone: were the check missing, `venv` could not run the set-up from here.
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    empty = tmp_path / "empty-path"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "SEESAY_TEST_REDIS_SERVER"} | {"PATH": str(empty)}
    make = shutil.which("make")
    assert make is not None
    done = subprocess.run([make, "-C", str(tmp_path), "test"], capture_output=True, text=True, env=env, timeout=60,
                          check=False)
    assert done.returncode != 0
    assert "make test needs redis-server" in done.stderr
    assert "apt-get install redis-server" in done.stderr and "brew install redis" in done.stderr
    assert "setup-venv" not in done.stdout + done.stderr
    # With one on PATH the check passes.
    (empty / "redis-server").write_text("#!/bin/sh\n")
    (empty / "redis-server").chmod(0o755)
    passed = subprocess.run([make, "-C", str(tmp_path), "need-redis"], capture_output=True, text=True, env=env,
                            timeout=60, check=False)
    assert passed.returncode == 0, passed.stderr


def test_every_seesay_command_in_the_makefile_parses() -> None:
    from seesay.cli import build_parser

    recipes = re.findall(r"^\t(?:\S+=\S+ )*\.venv/bin/seesay (.+)$", (ROOT / "Makefile").read_text(encoding="utf-8"),
                         flags=re.M)
    assert len(recipes) >= 2
    for recipe in recipes:
        args = build_parser().parse_args(shlex.split(recipe))  # an unknown option exits 2
        assert hasattr(args, "func"), recipe
