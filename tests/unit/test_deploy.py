"""The deployment files in ``deploy/`` are valid and agree with seesay's own settings and routes.

Validity: every Kubernetes manifest validates strictly (an unknown field fails) against the
schemas that ``kubernetes-validate`` ships for :data:`KUBERNETES_VERSION`, and
``deploy/compose.yaml`` against the vendored Compose Specification schema; both offline.

Agreement, each a check that a change elsewhere can break: probes reach ``/ready`` and
``/health`` on the port seesay listens on; the grace before SIGKILL covers the drain; every
``SEESAY_*`` variable names a field of :class:`seesay.config.Settings` (a renamed setting fails
here) and every value parses; API keys come from a Secret; vLLM gets a GPU and the same pixel
budget, context and image count as seesay; the URLs point at the services that exist; the image
installs the ``serve`` extra.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest

from deploy_files import (
    DEPLOY,
    DOCKERFILE,
    compose,
    config_map,
    container,
    k8s_documents,
    k8s_resource,
    pod_spec,
    seesay_environments,
    vllm_command_lines,
)
from seesay.config import Settings, load_settings

ROOT = Path(__file__).parents[2]
KUBERNETES_VERSION = "1.33.0"

# uvicorn waits up to drain_timeout_s for open requests, then the app's lifespan drains the
# scheduler for up to drain_timeout_s more (seesay.api.commands, seesay.service).
DRAIN_PHASES = 2


def default(name: str) -> Any:
    return Settings.model_fields[name].default


def duration_s(text: str) -> float:
    """A Compose duration (``1m30s``, ``75s``, ``500ms``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(a + b for a, b in parts) == text, f"not a Compose duration: {text!r}"
    return sum(float(amount) * units[unit] for amount, unit in parts)


@pytest.mark.parametrize(("filename", "resource"), k8s_documents(),
                         ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in k8s_documents()])
def test_every_manifest_validates_strictly(filename: str, resource: dict[str, Any]) -> None:
    # SchemaNotFoundError (an unknown kind or apiVersion) is an error here too, not a warning.
    assert kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True) == "1.33"


def test_strict_validation_refuses_an_unknown_field() -> None:
    deployment = k8s_resource("Deployment", "seesay")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 75  # the field ends in "Seconds"
    with pytest.raises(kubernetes_validate.ValidationError, match="terminationGracePeriod"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_compose_file_validates_against_the_compose_specification() -> None:
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    assert [error.message for error in validator.iter_errors(compose())] == []
    broken = compose()
    broken["services"]["seesay"]["stop_grace"] = "75s"
    assert any("stop_grace" in error.message for error in validator.iter_errors(broken))


def test_seesay_probes_reach_ready_and_health_on_the_port_seesay_listens_on() -> None:
    port = int(config_map().get("SEESAY_PORT", default("port")))
    seesay = container("seesay")
    ports = {item["name"]: item["containerPort"] for item in seesay["ports"]}
    assert ports == {"http": port}
    probes = {kind: seesay[kind]["httpGet"] for kind in ("readinessProbe", "livenessProbe", "startupProbe")}
    assert probes["readinessProbe"]["path"] == "/ready"
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/health"
    assert all(ports.get(probe["port"], probe["port"]) == port for probe in probes.values())
    service_port = k8s_resource("Service", "seesay")["spec"]["ports"][0]["targetPort"]
    assert ports.get(service_port, service_port) == port
    # Compose: the healthcheck asks the replica itself for /ready, and the published port is seesay's.
    service = compose()["services"]["seesay"]
    assert f"http://127.0.0.1:{port}/ready" in " ".join(service["healthcheck"]["test"])
    assert all(mapping.endswith(f":{port}") for mapping in service["ports"])
    assert re.search(rf'CMD \[.*"--port", "{port}"\]', DOCKERFILE.read_text(encoding="utf-8"))


def test_the_grace_before_sigkill_covers_seesay_s_drain() -> None:
    environments = seesay_environments()
    for where, env in environments.items():
        drain = float(env.get("SEESAY_DRAIN_TIMEOUT_S", default("drain_timeout_s")))
        assert drain >= default("drain_timeout_s"), f"{where}: keep at least the default drain time"
        if where == "k8s":
            spec = pod_spec("seesay")
            pre_stop = container("seesay")["lifecycle"]["preStop"]["exec"]["command"]
            assert pre_stop[0] == "sleep"
            assert spec["terminationGracePeriodSeconds"] > float(pre_stop[1]) + DRAIN_PHASES * drain
        else:
            assert duration_s(compose()["services"]["seesay"]["stop_grace_period"]) > DRAIN_PHASES * drain


def test_every_seesay_variable_names_a_setting_and_its_value_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = set(Settings.model_fields)
    for where, env in seesay_environments().items():
        k8s_env = {item["name"] for item in container("seesay").get("env", [])} if where == "k8s" else set()
        for variable in set(env) | k8s_env:
            assert variable.startswith("SEESAY_"), f"{where}: {variable} is not a seesay setting"
            name = variable.removeprefix("SEESAY_").lower()
            assert name in fields, f"{where}: {variable} names no field of seesay.config.Settings"
        # Every value seesay already knows parses; the keys file exists only inside the container.
        for variable in [v for v in os.environ if v.startswith("SEESAY_")]:
            monkeypatch.delenv(variable)
        known = {k: v for k, v in env.items()
                 if k.removeprefix("SEESAY_").lower() in fields and k != "SEESAY_API_KEYS_FILE"}
        for variable, value in known.items():
            monkeypatch.setenv(variable, value)
        settings = load_settings()
        assert settings.max_pixels == int(env["SEESAY_MAX_PIXELS"]), where


def test_api_keys_come_from_a_secret() -> None:
    secret = k8s_resource("Secret", "seesay-secrets")
    assert {"api_keys", "vllm_api_key"} <= set(secret["stringData"])
    assert all("REPLACE-ME" in value for value in secret["stringData"].values()), "placeholders only in git"
    for where, env in seesay_environments().items():
        assert "SEESAY_API_KEYS" not in env and "SEESAY_REMOTE_API_KEY" not in env, f"{where}: a key in plain config"
    # Kubernetes: the keys file is the Secret's api_keys item, mounted read-only.
    keys_file = Path(config_map()["SEESAY_API_KEYS_FILE"])
    volumes = {volume["name"]: volume for volume in pod_spec("seesay")["volumes"]}
    [mount] = [m for m in container("seesay")["volumeMounts"] if Path(m["mountPath"]) == keys_file.parent]
    assert mount["readOnly"] is True
    source = volumes[mount["name"]]["secret"]
    assert source["secretName"] == "seesay-secrets"
    assert {"key": "api_keys", "path": keys_file.name} in source["items"]
    # The upstream key reaches seesay and vLLM from the same Secret entry.
    for name, variable in (("seesay", "SEESAY_REMOTE_API_KEY"), ("vllm", "VLLM_API_KEY")):
        [entry] = [e for e in container(name)["env"] if e["name"] == variable]
        assert entry["valueFrom"]["secretKeyRef"] == {"name": "seesay-secrets", "key": "vllm_api_key"}
    # Compose: the keys file is a Compose secret read from a file outside git.
    service = compose()["services"]["seesay"]
    secret_name = Path(service["environment"]["SEESAY_API_KEYS_FILE"]).relative_to("/run/secrets").as_posix()
    assert secret_name in service["secrets"]
    assert compose()["secrets"][secret_name]["file"].startswith("./secrets/")
    assert "deploy/secrets/" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()


def test_vllm_gets_a_gpu() -> None:
    limits = container("vllm")["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1
    devices = compose()["services"]["vllm"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] and device.get("count", 1) >= 1 for device in devices)


def test_vllm_takes_the_model_budget_and_context_seesay_sends() -> None:
    environments = seesay_environments()
    command_lines = vllm_command_lines()
    assert command_lines["k8s"] == command_lines["compose"], "one vLLM configuration in both files"
    for where, flags in command_lines.items():
        env = environments[where]
        assert flags["--model"] == env["SEESAY_REMOTE_MODEL"], where
        assert int(flags["--max-model-len"]) == int(env["SEESAY_MAX_MODEL_LEN"]), where
        size = json.loads(flags["--mm-processor-kwargs"])["size"]
        assert (size["shortest_edge"], size["longest_edge"]) == (
            int(env["SEESAY_MIN_PIXELS"]), int(env["SEESAY_MAX_PIXELS"])), where
        limits = json.loads(flags["--limit-mm-per-prompt"])
        assert limits["image"] >= int(env["SEESAY_MAX_IMAGES_PER_REQUEST"]) and limits["video"] == 0, where
        assert 0 < float(flags["--gpu-memory-utilization"]) < 1, where


def test_urls_point_at_the_services_that_exist() -> None:
    services = {doc["metadata"]["name"]: doc["spec"]["ports"] for _, doc in k8s_documents() if doc["kind"] == "Service"}
    vllm_port = int(vllm_command_lines()["k8s"]["--port"])
    for where, env in seesay_environments().items():
        upstream, redis = urlsplit(env["SEESAY_REMOTE_UPSTREAMS"]), urlsplit(env["SEESAY_REDIS_URL"])
        assert (upstream.scheme, upstream.path) == ("http", "/v1"), where
        if where == "k8s":
            assert upstream.port in [p["port"] for p in services[str(upstream.hostname)]]
            assert redis.port in [p["port"] for p in services[str(redis.hostname)]]
        else:
            assert {upstream.hostname, redis.hostname} <= set(compose()["services"])
            assert upstream.port == vllm_port and redis.port == 6379
        assert [p["port"] for p in services["vllm"]] == [vllm_port]


def test_the_image_installs_the_serve_extra_and_serves_on_all_interfaces() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    installs = [shlex.split(line.split("RUN ", 1)[1].split("&&")[0]) for line in text.splitlines()
                if line.startswith("RUN pip install")]
    assert installs == [["pip", "install", ".[serve]"]], "the serve extra alone: no torch in this image"
    assert '"seesay", "serve", "--host", "0.0.0.0"' in text
    assert compose()["services"]["seesay"]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}


def test_readme_points_at_files_that_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:deploy|docs)/[\w./-]*)", readme)) | set(re.findall(r"\]\((docs/[\w./-]+)\)", readme))
    assert {"deploy/compose.yaml", "deploy/k8s/", "deploy/Dockerfile", "docs/capacity.md"} <= named
    assert all((ROOT / path).exists() for path in named), sorted(p for p in named if not (ROOT / p).exists())
