"""Readers of the files in ``deploy/``, shared by the tests that check them against seesay and docs/capacity.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).parent.parent / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    """(file name, resource) for every resource in ``deploy/k8s/*.yaml``."""
    found = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    return found


def k8s_resource(kind: str, name: str) -> dict[str, Any]:
    [resource] = [doc for _, doc in k8s_documents() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return resource


def pod_spec(deployment: str) -> dict[str, Any]:
    spec: dict[str, Any] = k8s_resource("Deployment", deployment)["spec"]["template"]["spec"]
    return spec


def container(deployment: str) -> dict[str, Any]:
    [only] = pod_spec(deployment)["containers"]
    return dict(only)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def config_map() -> dict[str, str]:
    return dict(k8s_resource("ConfigMap", "seesay-config")["data"])


def seesay_environments() -> dict[str, dict[str, str]]:
    """Where seesay's settings are set: the ConfigMap and the Compose service's environment."""
    environment = compose()["services"]["seesay"]["environment"]
    return {"k8s": config_map(), "compose": {key: str(value) for key, value in environment.items()}}


def vllm_flags(args: list[str]) -> dict[str, str]:
    """``--flag value`` pairs of a vLLM command line (every flag used here takes a value)."""
    assert len(args) % 2 == 0 and all(flag.startswith("--") for flag in args[::2]), args
    return dict(zip(args[::2], args[1::2], strict=True))


def vllm_command_lines() -> dict[str, dict[str, str]]:
    return {"k8s": vllm_flags(container("vllm")["args"]),
            "compose": vllm_flags(compose()["services"]["vllm"]["command"])}
