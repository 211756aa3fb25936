"""POST /v1/chat/completions and /v1/vqa against a FakeEngine: answers, streams, parameters, errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from fakes import FAIL_GENERATE, FakeEngine, app_client, data_url, fake_settings, png_bytes
from seesay.api.app import build_app
from seesay.types import SamplingParams

MODEL = "fake-vl"
PNG = data_url(png_bytes())


def chat(content: Any = "what is this?", **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **fields}


def image_part(url: str = PNG) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def sse_events(text: str) -> list[Any]:
    """The data payloads of a server-sent event stream ("[DONE]" kept as a string)."""
    payloads = [line.removeprefix("data: ") for line in text.split("\n\n") if line.startswith("data: ")]
    return [p if p == "[DONE]" else json.loads(p) for p in payloads]


async def post(client: httpx.AsyncClient, body: Any) -> httpx.Response:
    return await client.post("/v1/chat/completions", json=body)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]  # type: ignore[no-any-return]


# --- answers ---------------------------------------------------------------------------------


async def test_an_image_and_a_question_get_an_openai_completion(client: httpx.AsyncClient) -> None:
    response = await post(client, chat([image_part(), {"type": "text", "text": "What colour is it?"}]))
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    assert body["id"].startswith("chatcmpl-") and response.headers["x-request-id"]
    message = {"role": "assistant", "content": "1 image(s): What colour is it?"}
    assert body["choices"] == [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}]
    usage = body["usage"]
    assert usage["completion_tokens"] == 6 and usage["total_tokens"] == usage["prompt_tokens"] + 6
    assert usage["prompt_tokens"] >= 16  # the image's tokens count as prompt tokens


async def test_several_images_and_a_multi_turn_conversation(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    messages = [
        {"role": "developer", "content": "Answer briefly."},
        {"role": "user", "content": [image_part(), image_part(data_url(png_bytes((0, 0, 255)))),
                                     {"type": "text", "text": "Compare them."}]},
        {"role": "assistant", "content": "The first is red."},
        {"role": "user", "content": "And the second?"},
    ]
    response = await post(client, {"model": MODEL, "messages": messages})
    assert response.json()["choices"][0]["message"]["content"] == "2 image(s): And the second?"
    seen = engine.requests[-1]
    assert [m.role for m in seen.messages] == ["system", "user", "assistant", "user"]
    assert len(seen.messages[1].images) == 2 and seen.messages[2].text == "The first is red."


async def test_a_previous_answer_can_be_sent_back_as_it_came(client: httpx.AsyncClient) -> None:
    first = (await post(client, chat("first question"))).json()["choices"][0]["message"]
    echoed = {**first, "refusal": None, "annotations": [], "tool_calls": None}
    messages = [{"role": "user", "content": "first question"}, echoed, {"role": "user", "content": "and then?"}]
    response = await post(client, {"model": MODEL, "messages": messages})
    assert response.json()["choices"][0]["message"]["content"] == "0 image(s): and then?"
    tools = [{"role": "user", "content": "hi"}, {**echoed, "tool_calls": [{"id": "x"}]}, {"role": "user",
                                                                                          "content": "ok"}]
    assert (await post(client, {"model": MODEL, "messages": tools})).status_code == 400


async def test_sampling_fields_reach_the_engine(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    await post(client, chat(max_tokens=7, max_completion_tokens=9, temperature=0.3, top_p=0.9, top_k=5, seed=42,
                            presence_penalty=1.5, frequency_penalty=-0.5, repetition_penalty=1.1, stop="END"))
    assert engine.requests[-1].sampling == SamplingParams(
        max_new_tokens=9, temperature=0.3, top_p=0.9, top_k=5, presence_penalty=1.5, frequency_penalty=-0.5,
        repetition_penalty=1.1, seed=42, stop=("END",),
    )


async def test_max_tokens_and_stop_shape_the_answer(client: httpx.AsyncClient) -> None:
    short = (await post(client, chat("one two three four five", max_tokens=3))).json()
    assert short["choices"][0] == {**short["choices"][0], "finish_reason": "length"}
    assert short["choices"][0]["message"]["content"] == "0 image(s): one"
    stopped = (await post(client, chat("one two three four", stop=["three"]))).json()
    assert stopped["choices"][0]["message"]["content"] == "0 image(s): one two"


async def test_streaming_sends_chunks_then_done(client: httpx.AsyncClient) -> None:
    response = await post(client, chat("tell me", stream=True))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "0 image(s): tell me"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)


async def test_stream_options_include_usage_adds_a_usage_chunk(client: httpx.AsyncClient) -> None:
    response = await post(client, chat("count", stream=True, stream_options={"include_usage": True}))
    *chunks, done = sse_events(response.text)
    assert done == "[DONE]"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_pixel_budget_extension_fits_images_to_the_requested_budget(
    client: httpx.AsyncClient, engine: FakeEngine
) -> None:
    big = data_url(png_bytes(size=(640, 480)))
    await post(client, chat([image_part(big), {"type": "text", "text": "hi"}], seesay={"max_pixels": 64 * 64}))
    request = engine.requests[-1]
    assert request.pixel_budget is not None and request.pixel_budget.max_pixels == 64 * 64
    width, height = request.images[0].size
    assert width * height <= 64 * 64


async def test_vqa_multipart_upload(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    response = await client.post("/v1/vqa", files={"image": ("shirt.png", png_bytes(), "image/png")},
                                 data={"question": "What colour?", "max_tokens": "5", "seed": "3"})
    assert response.status_code == 200
    body = response.json()
    assert body["answer"] == "1 image(s): What colour?" and body["model"] == MODEL
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert engine.requests[-1].sampling.max_new_tokens == 5 and engine.requests[-1].sampling.seed == 3


async def test_models_lists_the_served_model(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/v1/models")).json()
    assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == [MODEL]
    assert (await client.get(f"/v1/models/{MODEL}")).json()["id"] == MODEL
    assert error_of(await client.get("/v1/models/gpt-4o"))["code"] == "model_not_found"


async def test_served_model_name_setting_renames_the_model() -> None:
    async with app_client(build_app(fake_settings(served_model_name="shop-vl"), FakeEngine())) as client:
        response = await client.post("/v1/chat/completions", json={**chat(), "model": "shop-vl"})
        assert response.json()["model"] == "shop-vl"
        assert (await client.post("/v1/chat/completions", json=chat())).status_code == 404


# --- refusals and malformed requests ---------------------------------------------------------

REFUSED = [
    pytest.param(chat(n=2), "n", "n must be 1", id="n"),
    pytest.param(chat(logprobs=True), "logprobs", "logprobs", id="logprobs"),
    pytest.param(chat(tools=[{"type": "function"}]), "tools", "'tools' is not a parameter", id="tools"),
    pytest.param(chat(temperature=3), "temperature", "less than or equal to 2", id="temperature"),
    pytest.param(chat(stop=["a", "b", "c", "d", "e"]), "stop", "at most 4", id="stop"),
    pytest.param({"model": MODEL, "messages": []}, "messages", "at least 1 item", id="empty-messages"),
    pytest.param({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}, "messages[0].role",
                 "Input should be 'system', 'developer', 'user' or 'assistant' (got \"tool\")", id="wrong-role"),
    pytest.param({"model": MODEL, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant",
                  "content": "hello"}]}, "messages", "the last message must come from the user", id="assistant-last"),
    pytest.param({"model": MODEL, "messages": [{"role": "system", "content": [image_part()]},
                                               {"role": "user", "content": "hi"}]},
                 "messages", "images are only allowed in user messages", id="image-in-system"),
    pytest.param(chat("   "), "messages", "needs text or an image", id="blank-user-message"),
    pytest.param(chat([{"type": "input_audio", "input_audio": {}}]), "messages[0].content[0]", "input_audio",
                 id="unknown-part"),
    pytest.param(chat([{"type": "image_url", "image_url": {}}]), "messages[0].content[0].image_url.url",
                 "is required", id="image-without-url"),
    pytest.param(chat(7), "messages[0].content", "content must be a string or a list", id="content-type"),
    pytest.param({"messages": [{"role": "user", "content": "hi"}]}, "model", "'model' is required", id="no-model"),
    pytest.param(chat(seesay={"max_pixels": 10**9}), "seesay.max_pixels", "over this server's limit", id="budget"),
    pytest.param(chat(seesay={"min_pixels": 10}), "seesay.min_pixels", "min_pixels must be at least",
                 id="tiny-budget"),
]


@pytest.mark.parametrize(("body", "param", "message"), REFUSED)
async def test_invalid_requests_get_a_400_that_names_the_problem(
    client: httpx.AsyncClient, body: Any, param: str | None, message: str
) -> None:
    response = await post(client, body)
    assert response.status_code == 400
    error = error_of(response)
    assert message in error["message"] and error["type"] == "invalid_request_error"
    assert error["param"] == param


async def test_invalid_json_gets_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", content=b'{"model": "x",', headers={"content-type":
                                                                                               "application/json"})
    assert response.status_code == 400
    assert "not valid JSON" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("url", "code", "message"),
    [
        (data_url(b"this is not a picture"), "invalid_image", "not a recognised image format"),
        ("data:text/plain;base64,aGVsbG8=", "invalid_image", "not an image"),
        ("data:image/png;base64,%%%notbase64", "invalid_image", "not valid base64"),
        ("ftp://example.com/a.png", "invalid_image_url", "data: URL"),
        ("https://example.com/a.png", "invalid_image_url", "does not fetch http(s) image URLs"),
    ],
)
async def test_an_image_part_that_is_not_an_image_is_refused(
    client: httpx.AsyncClient, url: str, code: str, message: str
) -> None:
    response = await post(client, chat([image_part(url), {"type": "text", "text": "what?"}]))
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == code and message in error["message"]
    assert error["param"] == "messages[0].content[0].image_url"


async def test_an_unknown_model_gets_404(client: httpx.AsyncClient) -> None:
    response = await post(client, {**chat(), "model": "gpt-4o"})
    assert response.status_code == 404
    assert error_of(response)["code"] == "model_not_found" and "fake-vl" in error_of(response)["message"]


async def test_a_hundred_images_are_refused_before_decoding(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    response = await post(client, chat([image_part()] * 100 + [{"type": "text", "text": "all of them?"}]))
    assert response.status_code == 400
    assert "100 images" in error_of(response)["message"] and "at most 8" in error_of(response)["message"]
    assert engine.requests == []


async def test_a_25_megabyte_body_gets_413_before_parsing(client: httpx.AsyncClient, engine: FakeEngine) -> None:
    huge = chat([image_part("data:image/png;base64," + "A" * 25_000_000), {"type": "text", "text": "hi"}])
    response = await post(client, huge)
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large" and "limit" in error_of(response)["message"]

    async def chunks() -> Any:  # no Content-Length: counted while reading
        for _ in range(26):
            yield b" " * 1_000_000

    chunked = await client.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    assert engine.requests == []


async def test_an_oversized_image_gets_413(engine: FakeEngine) -> None:
    async with app_client(build_app(fake_settings(max_image_bytes=2048), engine)) as client:
        response = await post(client, chat([image_part(data_url(png_bytes(size=(400, 400)) + b"\0" * 4096)),
                                            {"type": "text", "text": "big?"}]))
        assert response.status_code == 413 and error_of(response)["code"] == "image_too_large"


async def test_the_server_keeps_serving_after_malformed_requests(client: httpx.AsyncClient) -> None:
    for body in (b"{", b"[]", b'"text"', json.dumps({"model": MODEL}).encode()):
        response = await client.post("/v1/chat/completions", content=body, headers={"content-type":
                                                                                     "application/json"})
        assert response.status_code == 400
    assert (await post(client, chat("still fine?"))).json()["choices"][0]["message"]["content"] == (
        "0 image(s): still fine?")
    assert (await client.get("/health")).json() == {"status": "ok"}


async def test_an_engine_crash_is_a_500_without_internals(client: httpx.AsyncClient) -> None:
    response = await post(client, chat(FAIL_GENERATE))
    assert response.status_code == 500
    error = error_of(response)
    assert error["type"] == "server_error" and error["code"] == "engine_error"
    assert (await post(client, chat("after the crash"))).status_code == 200


async def test_an_error_mid_stream_is_sent_as_an_error_event(client: httpx.AsyncClient) -> None:
    response = await post(client, chat(FAIL_GENERATE, stream=True))
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "engine_error"


async def test_unknown_routes_and_methods_get_openai_errors(client: httpx.AsyncClient) -> None:
    assert error_of(await client.get("/v1/completions"))["code"] == "not_found"
    wrong_method = await client.get("/v1/chat/completions")
    assert wrong_method.status_code == 405 and error_of(wrong_method)["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("files", "data", "param", "message"),
    [
        ({}, {"question": "what?"}, "image", "'image' is required"),
        ({"image": ("x.png", b"not an image", "image/png")}, {"question": "what?"}, "image", "not a recognised"),
        ({"image": ("x.png", png_bytes(), "image/png")}, {}, "question", "'question' is required"),
        ({"image": ("x.png", png_bytes(), "image/png")}, {"question": "q", "max_pixels": "999999999"}, "max_pixels",
         "over this server's limit"),
        ({"image": ("x.png", png_bytes(), "image/png")}, {"question": "q", "n": "2"}, "n", "not a parameter"),
    ],
)
async def test_bad_vqa_uploads_get_a_400_naming_the_field(
    client: httpx.AsyncClient, files: dict[str, Any], data: dict[str, str], param: str, message: str
) -> None:
    response = await client.post("/v1/vqa", files=files or None, data=data)
    assert response.status_code == 400
    assert error_of(response)["param"] == param and message in error_of(response)["message"]


def test_the_openapi_schema_documents_each_answer_and_its_errors() -> None:
    responses = {path: build_app(fake_settings(), FakeEngine()).openapi()["paths"][path]["post"]["responses"]
                 for path in ("/v1/chat/completions", "/v1/vqa")}
    for path, schema in (("/v1/chat/completions", "ChatCompletionResponse"), ("/v1/vqa", "VqaResponse")):
        ok = responses[path]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{schema}"}
        assert responses[path]["429"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")
