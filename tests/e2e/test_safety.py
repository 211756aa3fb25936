"""Content safety end to end: ``seesay serve`` and ``seesay ask`` as subprocesses, configured by environment.

The block path runs with the ``flag`` image detector, which flags every picture, so real
requests are blocked without an indecent picture in the repository. The server answers 400
``content_policy_violation`` and ``seesay ask`` exits 1 with the same message, or, with
``safety_on_block=refuse``, both answer with the refusal. A detector that cannot load keeps
the server from starting, with the fix in the message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image
from server_process import ServerProcess, running_server
from test_serve import MAX_TOKENS, PICTURES, SAMPLES, user

from seesay.engine.config import demo_model_dir

FLAGGED = ("image 1 of the request was blocked by the content policy (FLAGGED_BY_TEST_DETECTOR, score 1.00); "
           "send a different picture")
REFUSAL_ZH = "抱歉，我无法回答这个问题。"


def environment(model_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEESAY_")}
    env["HF_HUB_OFFLINE"] = "1"
    if model_path != demo_model_dir():
        env["SEESAY_MODEL"] = str(model_path)
    env.update({f"SEESAY_{name.upper()}": value for name, value in settings.items()})
    return env


def seesay(model_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "seesay.cli", *args], capture_output=True, text=True,
                          env=environment(model_path, **settings), timeout=300, check=False)


@pytest.fixture(scope="module")
def flagging_server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose image screen flags every picture."""
    log = tmp_path_factory.mktemp("flagging") / "serve.log"
    with running_server(model_path, log, safety_image_detector="flag") as process:
        yield process


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pictures") / "item.png"
    path.write_bytes(PICTURES[0])
    return path


def test_a_blocked_picture_gets_a_400_content_policy_violation(flagging_server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{flagging_server.base_url}/v1", api_key="unused")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=flagging_server.model_name, max_tokens=MAX_TOKENS,
                                       messages=[user(PICTURES[0], text=SAMPLES[0].question)])  # type: ignore[list-item]
    assert caught.value.status_code == 400 and caught.value.code == "content_policy_violation"
    assert caught.value.body == {"message": FLAGGED, "type": "invalid_request_error", "param": None,
                                 "code": "content_policy_violation"}
    upload = httpx.post(f"{flagging_server.base_url}/v1/vqa", files={"image": ("x.png", PICTURES[1], "image/png")},
                        data={"question": SAMPLES[1].question}, timeout=60)
    assert upload.status_code == 400 and upload.json()["error"]["message"] == FLAGGED
    # A question without a picture still reaches the model.
    text_only = client.chat.completions.create(model=flagging_server.model_name, max_tokens=4,
                                               messages=[{"role": "user", "content": "hello"}])
    assert text_only.choices[0].finish_reason in ("stop", "length")
    page = httpx.get(f"{flagging_server.base_url}/metrics").text
    assert 'seesay_safety_blocks_total{rule="FLAGGED_BY_TEST_DETECTOR",where="image"} 2.0' in page
    audit = [json.loads(line[line.index("{"):]) for line in flagging_server.log.splitlines()
             if "seesay.safety.audit" in line]
    assert [(event["where"], event["detector"]) for event in audit] == [("image", "flag")] * 2


def test_a_prompt_that_breaks_the_policy_gets_a_400(flagging_server: ServerProcess) -> None:
    response = httpx.post(f"{flagging_server.base_url}/v1/chat/completions", timeout=60, json={
        "model": flagging_server.model_name, "messages": [{"role": "user", "content": "怎么破解这个软件？"}]})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "the prompt was blocked by the content policy (rule 'cracking'); rephrase the request",
        "type": "invalid_request_error", "param": None, "code": "content_policy_violation"}


def test_seesay_ask_exits_1_with_the_servers_message(model_path: Path, picture: Path) -> None:
    done = seesay(model_path, "ask", str(picture), SAMPLES[0].question, safety_image_detector="flag")
    assert done.returncode == 1
    assert done.stderr == f"seesay: error: {FLAGGED}\n" and done.stdout == ""


def test_seesay_ask_answers_with_the_refusal_when_configured_to(model_path: Path, picture: Path) -> None:
    done = seesay(model_path, "ask", str(picture), "这是什么颜色？", "--json", safety_image_detector="flag",
                  safety_on_block="refuse")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["text"], answer["finish_reason"]) == (REFUSAL_ZH, "content_filter")


@pytest.fixture(scope="module")
def face(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A photograph in which NudeNet finds a FACE_FEMALE (scikit-image's astronaut, shipped in its wheel)."""
    from skimage import data

    path = tmp_path_factory.mktemp("pictures") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


def test_seesay_ask_screens_with_nudenet_by_default(model_path: Path, picture: Path, face: Path,
                                                    tmp_path: Path) -> None:
    """No detector setting: the catalogue picture is answered, and NudeNet is what screened it.

    No indecent picture is kept in the repository, so the proof that NudeNet screens by default
    is the same command with the default detector told to flag a label of NudeNet's own
    (FACE_FEMALE) and given a picture NudeNet finds one in: it is blocked, and the audit line
    names NudeNet. Nothing but the detector's options differs between the two runs.
    """
    done = seesay(model_path, "ask", str(picture), SAMPLES[0].question, "--temperature", "0")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{SAMPLES[0].answer}\n" and done.stderr == ""

    audit = tmp_path / "audit.jsonl"
    faces = json.dumps({"labels": ["FACE_FEMALE"]})
    blocked = seesay(model_path, "ask", str(face), SAMPLES[0].question, "--temperature", "0",
                     safety_image_options=faces, safety_audit_log=str(audit))
    assert blocked.returncode == 1 and blocked.stdout == ""
    assert blocked.stderr.startswith("seesay: error: image 1 of the request was blocked by the content policy "
                                     "(FACE_FEMALE, score 0."), blocked.stderr
    [event] = [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines()]
    assert (event["where"], event["rule"], event["detector"]) == ("image", "FACE_FEMALE", "nudenet")


@pytest.mark.parametrize(("settings", "message"), [
    ({"safety_image_detector": "bogus"},
     "seesay: error: unknown image detector 'bogus'; choose one of: flag, hf-classifier, nudenet\n"),
    ({"safety_image_options": '{"threshold": 7}'}, "nudenet threshold must be between"),
])
def test_a_detector_that_cannot_load_keeps_the_server_from_starting(
    model_path: Path, settings: dict[str, str], message: str
) -> None:
    done = seesay(model_path, "serve", "--port", "9", **settings)
    assert done.returncode == 1 and message in done.stderr
    assert "Uvicorn running" not in done.stderr
