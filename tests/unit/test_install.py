"""The installs the README and the set-up give hold every package the default settings need.

Read from pyproject.toml of this tree (the installed ``seesay`` metadata can be another
checkout's, in an editable install) and from the README's own ``pip install 'seesay[...]'``
line, so README, set-up and packaging cannot drift apart. What a default needs is keyed by the
default's value in :class:`seesay.config.Settings`: a new default detector or engine fails here
until this table says what it needs.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from seesay.config import Settings

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
SETUP_SCRIPT = ROOT / "scripts" / "setup-venv.sh"

# Distributions each default value needs when seesay runs with it.
ENGINE_NEEDS = {"transformers": {"torch", "transformers", "accelerate", "safetensors", "tokenizers"}}
DETECTOR_NEEDS: dict[str | None, set[str]] = {
    "nudenet": {"nudenet"}, "hf-classifier": {"torch", "transformers"}, "flag": set(), None: set(),
}
# `seesay serve` itself: the app and server, multipart uploads (/v1/vqa), /metrics, the Redis
# tier and YAML settings files the README documents for `seesay serve` without naming an extra.
SERVER_NEEDS = {"fastapi", "uvicorn", "python-multipart", "prometheus-client", "redis", "pyyaml"}


def default(name: str) -> object:
    return Settings.model_fields[name].default


def ask_needs() -> set[str]:
    """What `seesay ask` needs with the default settings."""
    engine, detector = default("engine"), default("safety_image_detector")
    assert engine in ENGINE_NEEDS, f"say in ENGINE_NEEDS what the default engine {engine!r} needs"
    assert detector in DETECTOR_NEEDS, f"say in DETECTOR_NEEDS what the default detector {detector!r} needs"
    assert default("safety") is True
    return ENGINE_NEEDS[str(engine)] | DETECTOR_NEEDS[detector]  # type: ignore[index]


def serve_needs() -> set[str]:
    """What `seesay serve` needs with the default settings."""
    return ask_needs() | SERVER_NEEDS


def packages(extras: set[str]) -> set[str]:
    """Canonical names of the distributions `pip install 'seesay[extras]'` installs directly."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    optional = project["optional-dependencies"]
    names = {canonicalize_name(Requirement(spec).name) for spec in project["dependencies"]}
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        assert extra in optional, f"pyproject.toml has no extra {extra!r}"
        for requirement in map(Requirement, optional[extra]):
            if canonicalize_name(requirement.name) == "seesay":  # an extra that includes others
                pending += requirement.extras
            else:
                names.add(canonicalize_name(requirement.name))
    return names


def readme_installs() -> list[set[str]]:
    """The extras of each `$ pip install 'seesay[...]'` command line in the README's console blocks."""
    text = README.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        commands += re.findall(r"^\$ pip install '?seesay\[([^\]]+)\]'?", block, flags=re.M)
    return [{extra.strip() for extra in extras.split(",")} for extras in commands]


def test_the_readme_gives_an_install_for_serving() -> None:
    assert any("serve" in extras for extras in readme_installs()), \
        "the README shows no `$ pip install 'seesay[...serve...]'` line"


@pytest.mark.parametrize("extras", readme_installs(), ids=lambda extras: ",".join(sorted(extras)))
def test_each_readme_install_holds_what_its_commands_need_by_default(extras: set[str]) -> None:
    installed = packages(extras)
    if "serve" in extras:
        missing = {canonicalize_name(name) for name in serve_needs()} - installed
        assert not missing, f"`pip install 'seesay[{','.join(sorted(extras))}]'` serves without {sorted(missing)}"
    if "model" in extras:
        missing = {canonicalize_name(name) for name in ask_needs()} - installed
        assert not missing, f"`seesay ask` from seesay[{','.join(sorted(extras))}] lacks {sorted(missing)}"


def test_the_serve_extra_alone_has_the_default_screen_and_no_torch() -> None:
    serve = packages({"serve"})
    assert {canonicalize_name(name) for name in DETECTOR_NEEDS[default("safety_image_detector")]} <= serve  # type: ignore[index]
    assert "torch" not in serve and "transformers" not in serve


def test_the_set_up_default_extras_serve_with_the_default_settings() -> None:
    match = re.search(r"^EXTRAS=\$\{SEESAY_EXTRAS:-([a-z,]+)\}$", SETUP_SCRIPT.read_text(encoding="utf-8"),
                      flags=re.M)
    assert match, "scripts/setup-venv.sh sets EXTRAS=${SEESAY_EXTRAS:-...}"
    missing = {canonicalize_name(name) for name in serve_needs()} - packages(set(match.group(1).split(",")))
    assert not missing, f"`make serve` installs no {sorted(missing)}"


def test_every_missing_dependency_message_names_an_extra_that_has_the_package() -> None:
    hints = []
    for source in (ROOT / "src" / "seesay").rglob("*.py"):
        hints += re.findall(r'MissingDependencyError\(\s*"([^"]+)",\s*"([^"]+)"', source.read_text(encoding="utf-8"))
    assert ("nudenet", "safety") in hints
    for package, extra in hints:
        assert canonicalize_name(package) in packages({extra}), f"seesay[{extra}] does not install {package}"
