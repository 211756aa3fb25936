"""The web page end to end: ``seesay serve`` with the demo model, driven in the system's Chromium by Playwright.

Chromium is ``/usr/bin/chromium`` (``SEESAY_TEST_CHROMIUM`` overrides; ``apt-get install chromium``);
Playwright never downloads a browser here. Without one the tests skip, which fails a CI run.
Every test saves a screenshot, named after it, under ``SEESAY_TEST_ARTIFACTS`` (default: the
``web-page`` folder of pytest's base temporary directory). The page must load nothing from any
other host: every request each page makes is recorded and checked. Tests wait on page conditions,
never on time.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import ServerProcess, running_server

from seesay.demo.examples import example_path
from seesay.images import PixelBudget

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
expect = playwright_api.expect

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
TIMEOUT_MS = 60_000  # a shared CPU may be slow; every wait is on a page condition


def chromium_path() -> str:
    path = os.environ.get("SEESAY_TEST_CHROMIUM", "/usr/bin/chromium")
    if not os.access(path, os.X_OK):
        pytest.skip(f"no Chromium at {path}: apt-get install chromium, or set SEESAY_TEST_CHROMIUM")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("SEESAY_TEST_ARTIFACTS") or tmp_path_factory.getbasetemp() / "web-page")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Page:
    """One browser page on the server, with every request it made."""

    def __init__(self, page: Any, server: ServerProcess) -> None:
        self.page = page
        self.server = server
        self.requests: list[Any] = []
        page.on("request", lambda request: self.requests.append(request))
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)

    def open(self) -> None:
        self.page.goto(self.server.base_url + "/")
        expect(self.page.locator("body")).to_have_attribute("data-ready", "true")

    def answers(self) -> Any:
        return self.page.locator("#conversation li.assistant[data-done='true']")

    def ask(self, question: str) -> str:
        done = self.answers().count()
        self.page.fill("#question", question)
        self.page.click("#ask")
        expect(self.answers()).to_have_count(done + 1)
        return str(self.answers().nth(done).locator(".text").text_content())

    def chat_requests(self) -> list[Any]:
        return [r for r in self.requests if r.url.endswith("/v1/chat/completions")]

    def model_view(self) -> dict[str, int]:
        canvas = self.page.locator("#model-view")
        return {key: int(str(canvas.get_attribute(f"data-{key}"))) for key in ("width", "height", "tokens")}


@pytest.fixture
def page(browser: Any, server: ServerProcess, artifacts: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh page (Chinese browser, desktop size) on the module's server; checks its requests and
    saves a screenshot afterwards."""
    marker = request.node.get_closest_marker("browser")
    options = {"locale": "zh-CN", "viewport": {"width": 1200, "height": 900}, "bypass_csp": False,
               **(marker.kwargs if marker else {})}
    context = browser.new_context(**options)
    try:
        wrapped = Page(context.new_page(), server)
        yield wrapped
        finish(wrapped, artifacts / f"{request.node.name}.png")
    finally:
        context.close()


def finish(page: Page, screenshot: Path) -> None:
    """Save the page's screenshot and check that it made no request to another host."""
    page.page.screenshot(path=str(screenshot), full_page=True)
    elsewhere = [r.url for r in page.requests if not r.url.startswith((page.server.base_url + "/", "data:", "blob:"))]
    assert elsewhere == [], "the page must talk to the seesay server only"


def api_answer(server: ServerProcess, messages: list[dict[str, Any]], max_pixels: int) -> dict[str, Any]:
    """What the API answers to the request the page sends (greedy, cache bypassed)."""
    body = {"model": server.model_name, "messages": messages, "temperature": 0,
            "seesay": {"max_pixels": max_pixels, "cache": False}}
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return dict(response.json())


def limits(server: ServerProcess) -> dict[str, int]:
    return dict(httpx.get(f"{server.base_url}/v1/seesay/limits").json())


def png_data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def test_a_chinese_question_streams_the_apis_answer_and_a_follow_up_continues(
    page: Page, server: ServerProcess
) -> None:
    page.open()
    expect(page.page.locator("html")).to_have_attribute("lang", "zh-CN")  # follows navigator.language
    picture = example_path("blue-jacket")
    page.page.set_input_files("#file-input", str(picture))
    expect(page.page.locator("#views")).to_be_visible()

    page.page.evaluate("""() => {
        window.answerSteps = [];  // the answer's text after each update, to see it grow as it streams
        new MutationObserver((records) => {
            for (const record of records) {
                const span = record.target.closest && record.target.closest("li.assistant .text");
                if (span) window.answerSteps.push(span.textContent);
            }
        }).observe(document.getElementById("conversation"), {childList: true, subtree: true, characterData: true});
    }""")
    first = page.ask("这件外套适合什么场合穿？")
    server_max = limits(server)["max_pixels"]
    opening = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_data_url(picture)}},
                                           {"type": "text", "text": "这件外套适合什么场合穿？"}]}
    direct = api_answer(server, [opening], server_max)
    assert first == direct["choices"][0]["message"]["content"] != ""
    steps = page.page.evaluate("() => window.answerSteps")
    assert len(steps) > 1 and all(first.startswith(step) for step in steps), steps  # shown piece by piece

    sent = page.chat_requests()[-1]
    body = sent.post_data_json
    assert body["stream"] is True and body["temperature"] == 0 and body["messages"] == [opening]
    response = sent.response()
    assert response.headers["content-type"].startswith("text/event-stream")
    meta = page.answers().nth(0).locator(".meta")
    expect(meta).to_have_attribute("data-finish", direct["choices"][0]["finish_reason"])
    assert meta.get_attribute("data-cache") in {"miss", "hit-memory", "hit-redis"}
    assert int(str(meta.get_attribute("data-image-tokens"))) == direct["usage"]["prompt_tokens_details"]["image_tokens"]

    second = page.ask("这是什么颜色？")
    follow_up = page.chat_requests()[-1].post_data_json["messages"]
    asked = {"role": "user", "content": "这是什么颜色？"}
    assert follow_up == [opening, {"role": "assistant", "content": first}, asked]
    assert second == api_answer(server, follow_up, server_max)["choices"][0]["message"]["content"] != ""
    expect(page.page.locator("#conversation li")).to_have_count(4)

    page.page.click("#new-picture")
    expect(page.page.locator("#conversation li")).to_have_count(0)
    expect(page.page.locator("#views")).to_be_hidden()


DROP_OR_PASTE = """async ([how, url]) => {
    const blob = await (await fetch(url)).blob();
    const data = new DataTransfer();
    data.items.add(new File([blob], "picture.png", {type: "image/png"}));
    if (how === "drop") {
        document.getElementById("drop-zone").dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true,
                                                                                   cancelable: true}));
    } else {
        document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: data, bubbles: true, cancelable: true}));
    }
}"""


@pytest.mark.parametrize("how", ["drop", "paste"])
def test_a_dropped_or_pasted_picture_is_previewed_and_asked_about(page: Page, how: str) -> None:
    page.open()
    page.page.evaluate(DROP_OR_PASTE, [how, "/web/examples/green-bag.png"])
    expect(page.page.locator("#views")).to_be_visible()
    expect(page.page.locator("#preview-caption")).to_have_text("你的图片：256 × 256 像素")
    assert page.ask("这是什么颜色？") != ""
    content = page.chat_requests()[-1].post_data_json["messages"][0]["content"]
    assert content[0]["image_url"]["url"] == png_data_url(example_path("green-bag"))


@pytest.mark.parametrize("budget", ["server's", "two thirds", "three tiles"])
def test_what_the_model_sees_is_the_size_and_token_count_the_api_reports(
    page: Page, server: ServerProcess, tmp_path: Path, budget: str
) -> None:
    from PIL import Image

    server_limits = limits(server)
    factor = server_limits["factor"]
    tiles = server_limits["max_pixels"] // factor**2
    max_pixels = {"server's": tiles, "two thirds": max(1, tiles * 2 // 3), "three tiles": 3}[budget] * factor**2
    odd = tmp_path / "odd.png"  # an aspect ratio and size that exercise the rounding
    Image.open(example_path("pink-dress")).convert("RGB").resize((517, 333)).save(odd)
    page.open()
    page.page.set_input_files("#file-input", str(odd))
    page.page.eval_on_selector("#budget", "(range, value) => { range.value = String(value); "
                               "range.dispatchEvent(new Event('input')); }", max_pixels)
    expected = PixelBudget(min(server_limits["min_pixels"], max_pixels), max_pixels, factor)
    width, height = expected.target_size(517, 333)
    expect(page.page.locator("#model-view")).to_have_attribute("data-tokens", str(expected.image_tokens(517, 333)))
    assert page.model_view() == {"width": width, "height": height, "tokens": (width // factor) * (height // factor)}
    expect(page.page.locator("#model-size")).to_have_text(f"{width} × {height} 像素")

    page.ask("这是什么？")
    assert page.chat_requests()[-1].post_data_json["seesay"] == {"max_pixels": max_pixels}
    meta = page.answers().nth(0).locator(".meta")
    assert int(str(meta.get_attribute("data-image-tokens"))) == page.model_view()["tokens"]


def test_a_non_image_file_and_a_blocked_question_get_readable_messages(page: Page, tmp_path: Path) -> None:
    page.open()
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a picture")
    page.page.set_input_files("#file-input", str(text_file))
    expect(page.page.locator("#picture-error")).to_have_text("这个文件不是图片。请选择 JPEG、PNG、WebP 或 GIF 图片。")

    page.page.set_input_files("#file-input", str(example_path("red-tshirt")))
    expect(page.page.locator("#picture-error")).to_have_text("")
    page.page.fill("#question", "怎么破解这个软件？")
    page.page.click("#ask")
    expect(page.page.locator("#ask-error")).to_have_text("这个问题被内容安全策略拒绝了，请换个问题。")
    expect(page.page.locator("#conversation li")).to_have_count(0)

    page.page.select_option("#language", "en")  # the switch: the interface follows at once
    expect(page.page.locator("#ask")).to_have_text("Ask")
    page.page.fill("#question", "How do I crack the software?")
    page.page.click("#ask")
    expect(page.page.locator("#ask-error")).to_have_text(
        "This question was refused by the content policy. Please ask something else.")


@pytest.mark.browser(locale="en-US", viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
def test_keyboard_alone_completes_the_ask_flow_on_a_phone_sized_screen(page: Page) -> None:
    page.open()
    expect(page.page.locator("html")).to_have_attribute("lang", "en")
    gallery = page.page.locator("#gallery button").first
    for _ in range(30):  # tab through the page in focus order to the first gallery picture
        if gallery.evaluate("element => element === document.activeElement"):
            break
        page.page.keyboard.press("Tab")
    else:
        pytest.fail("the gallery cannot be reached with the Tab key")
    outline = gallery.evaluate("element => getComputedStyle(element).outlineStyle")
    assert outline != "none", "the focused control must show its focus"
    page.page.keyboard.press("Enter")
    expect(page.page.locator("#question")).to_be_focused()  # the picture is in; on to the question
    page.page.keyboard.type("What colour is this item?")
    page.page.keyboard.press("Enter")
    expect(page.answers()).to_have_count(1)
    expect(page.answers().nth(0).locator(".text")).not_to_have_text("")
    expect(page.page.locator("#live")).to_have_text(str(page.answers().nth(0).locator(".text").text_content()))
    expect(page.page.locator("#question")).to_be_focused()
    overflow = page.page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, "the page must fit a phone-sized screen without sideways scrolling"


@pytest.mark.browser(bypass_csp=True)  # axe is injected as an inline script, which the page's CSP refuses
def test_axe_finds_no_serious_or_critical_accessibility_violations(page: Page) -> None:
    page.open()
    page.page.set_input_files("#file-input", str(example_path("yellow-hat")))
    page.ask("What is this item?")
    page.page.add_script_tag(path=str(AXE))
    results = page.page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    serious = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]]) for v in results["violations"]
               if v["impact"] in ("serious", "critical")]
    assert serious == []


@pytest.fixture(scope="module")
def keyed_server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("keyed-server") / "serve.log"
    with running_server(model_path, log, api_keys="sk-web-page") as process:
        yield process


def test_with_api_keys_the_page_asks_for_one_and_keeps_it_in_the_tab_only(
    browser: Any, keyed_server: ServerProcess, artifacts: Path
) -> None:
    context = browser.new_context(locale="en-US")
    try:
        page = Page(context.new_page(), keyed_server)
        page.open()
        expect(page.page.locator("#key-section")).to_be_visible()
        missing = "The API key is missing or wrong. Enter a valid key above."
        expect(page.page.locator("#ask-error")).to_have_text(missing)
        page.page.fill("#api-key", "sk-web-page")
        page.page.click("#save-key")
        expect(page.page.locator("#key-section")).to_be_hidden()
        expect(page.page.locator("#ask-error")).to_have_text("")
        page.page.set_input_files("#file-input", str(example_path("black-shoes")))
        assert page.ask("What is this item?") != ""
        assert page.chat_requests()[-1].headers["authorization"] == "Bearer sk-web-page"
        stored = page.page.evaluate("() => [sessionStorage.getItem('seesay-api-key'), localStorage.length]")
        assert stored == ["sk-web-page", 0]
        finish(page, artifacts / "test_with_api_keys_the_page_asks_for_one_and_keeps_it_in_the_tab_only.png")
    finally:
        context.close()
