"""Text the server cannot use gets a 400 that names the field, on both answering endpoints, never a 500.

A JSON ``\\ud800`` escape decodes to a lone UTF-16 surrogate, which no tokenizer, log line or
response can encode; form fields and bodies that are not UTF-8 would otherwise be read as
Latin-1 and reach the model as mojibake.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from fakes import FakeEngine, png_bytes

LONE = "\ud800"


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "fake-vl", "messages": [{"role": "user", "content": "what is this?"}], **fields}


def with_message(**message: Any) -> dict[str, Any]:
    return chat(messages=[{"role": "user", "content": "what is this?", **message}])


BAD_CHATS = {
    "messages[0].content": with_message(content=f"what is {LONE}?"),
    "messages[0].content[1].text": with_message(content=[
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": f"{LONE} what"}]),
    "messages[0].name": with_message(name=f"shop{LONE}"),
    "model": chat(model=LONE),
    "stop": chat(stop=f"end{LONE}"),
    "stop[1]": chat(stop=["end", LONE]),
    "user": chat(user=LONE),
}


def raw_json(body: dict[str, Any]) -> bytes:
    """``body`` as the JSON a client sends: lone surrogates as \\uXXXX escapes (valid JSON, invalid text)."""
    return json.dumps(body, ensure_ascii=True).encode("ascii")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("field", list(BAD_CHATS))
async def test_a_lone_surrogate_in_any_chat_field_is_a_400_naming_it(
    client: httpx.AsyncClient, engine: FakeEngine, field: str, stream: bool
) -> None:
    body = raw_json({**BAD_CHATS[field], "stream": stream})
    response = await client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["param"] == field
    assert "not valid Unicode" in error["message"] and "U+D800" in error["message"]
    assert engine.requests == []
    assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200  # still serving


async def test_a_body_that_is_not_utf8_is_a_400_saying_so(client: httpx.AsyncClient) -> None:
    body = b'{"model": "fake-vl", "messages": [{"role": "user", "content": "caf\xe9"}]}'
    response = await client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "not valid UTF-8" in response.json()["error"]["message"]


@pytest.mark.parametrize(("field", "value"), [
    ("question", "what \ud800?".encode("utf-8", "surrogatepass")),  # a surrogate's bytes: not UTF-8
    ("question", b"caf\xe9?"),  # Latin-1
    ("model", b"\xff"),
])
async def test_a_vqa_form_field_that_is_not_utf8_is_a_400_naming_it(
    client: httpx.AsyncClient, engine: FakeEngine, field: str, value: bytes
) -> None:
    form = {"question": "what is this?", field: value}
    response = await client.post("/v1/vqa", files={"image": ("a.png", png_bytes(), "image/png")}, data=form)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and "not valid UTF-8" in error["message"]
    assert engine.requests == []


async def test_a_vqa_question_in_utf8_reaches_the_model_exactly(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    question = "这件外套适合什么场合穿？café"
    response = await client.post("/v1/vqa", files={"image": ("jacket.png", png_bytes(), "image/png")},
                                 data={"question": question.encode("utf-8")})
    assert response.status_code == 200
    assert engine.requests[0].messages[0].text == question
