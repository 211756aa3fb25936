"""Safety benchmark: latency that screening adds to one request, p50, on this machine's CPU.

Image screening: the default NudeNet detector on a 1 MP photograph (scikit-image's retina
photograph normalised under the default Qwen3-VL pixel budget, 1024 x 1024; a synthetic
photo-like picture when scikit-image is absent), timed uncached (a new picture) and cached
(the same picture again), beside NudeNet's own ``NudeDetector.detect`` on the same pixels
for reference. Goal: uncached p50 <= 40 ms.

Text policy: the default policy's whole-text check of a Chinese and an English prompt and
of a short and a long answer, and the stream guard over a long answer fed as word-sized
deltas; plus what holding back costs a stream's first token, in characters, over every
question and answer of the demo shop.

Stream guard over HTTP: the added time-to-first-token of a streamed answer, the guard on
against the text policy off, through two in-process servers (uvicorn, ``bench/serve.py``'s
``InProcessServer``) in front of the test suite's FakeEngine, which streams every demo answer
at ``--token-ms`` per token (a word, or one CJK character); image screening and the response
cache are off on both, so only the guard differs.

Run: ``python bench/safety.py [--repeats N] [--threads N] [--streams N] [--token-ms MS]``
(needs ``seesay[safety]`` and ``seesay[serve]``).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes import FakeEngine
from seesay.demo.catalogue import corpus
from seesay.images import NormalizedImage, PixelBudget, load_image
from seesay.safety.image import ImageScreen, load_detector
from seesay.safety.policy import default_policy
from seesay.safety.stream import StreamGuard
from seesay.safety.text import TextPolicy
from serve import InProcessServer
from timing import median_seconds

PROMPT_ZH = "这件外套适合什么场合穿？可以搭配什么颜色的裤子？"
PROMPT_EN = "What occasions is this jacket suitable for, and what colour of trousers goes with it?"
ANSWER_SHORT = "适合春秋季休闲出行，可搭配牛仔裤。"
ANSWER_LONG = (
    "This jacket is great for casual spring and autumn outings. The shell is a water-resistant cotton blend, "
    "the lining is soft polyester, and the cut is relaxed enough for a sweater underneath. Pair it with dark "
    "jeans and white trainers for the weekend, or with chinos and leather shoes for the office. It comes in "
    "red, blue and black; the black one is the most versatile. Machine wash cold, do not tumble dry. "
) * 3


def p50_ms(run: Callable[[], object], repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls after two untimed warm-up calls."""
    return median_seconds(run, repeats, warmup=2) * 1000


def one_megapixel_photo() -> NormalizedImage:
    """A real photograph at the default pixel budget (about 1 MP), or a synthetic one."""
    try:
        from skimage import data

        pixels = data.retina()
    except ImportError:
        rng = np.random.default_rng(0)
        coarse = Image.fromarray(rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8))
        pixels = np.asarray(coarse.resize((1400, 1050), Image.Resampling.BICUBIC))
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB").save(buffer, "PNG")
    return load_image(buffer.getvalue(), PixelBudget())


def bench_images(repeats: int, threads: int) -> None:
    picture = one_megapixel_photo()
    width, height = picture.size
    print(f"image: {width}x{height} = {width * height / 1e6:.2f} MP")
    detector = load_detector("nudenet", {"threads": threads})
    uncached = p50_ms(lambda: detector.classify(picture.image), repeats)
    print(f"  nudenet classify, uncached ({threads} thread(s)): p50 {uncached:7.1f} ms   (goal <= 40 ms)")
    screen = ImageScreen(detector)
    screen.screen(picture)
    cached = p50_ms(lambda: screen.screen(picture), repeats)
    print(f"  image screen, cached verdict:                p50 {cached * 1000:7.1f} us")
    try:
        from nudenet import NudeDetector
    except ImportError:
        return
    reference = NudeDetector()
    rgb = np.ascontiguousarray(np.asarray(picture.image))
    baseline = p50_ms(lambda: reference.detect(rgb), repeats)
    print(f"  reference: nudenet's own NudeDetector.detect:  p50 {baseline:7.1f} ms")


def stream_words(text: str) -> list[str]:
    """Word-sized deltas: each word with the space before it."""
    words = text.split(" ")
    return [words[0], *(" " + word for word in words[1:])]


def bench_text(repeats: int) -> None:
    policy = default_policy()
    print(f"text policy {policy.version}: {sum(len(r.phrases) for r in policy.rules)} phrases, "
          f"{len(policy.allow)} allow-list phrases")
    cases = {"prompt zh": PROMPT_ZH, "prompt en": PROMPT_EN, "answer short zh": ANSWER_SHORT,
             f"answer long en ({len(ANSWER_LONG)} chars)": ANSWER_LONG}
    for name, text in cases.items():
        took = p50_ms(functools.partial(policy.check, text), repeats)
        print(f"  check {name:32s} p50 {took * 1000:8.1f} us")
    deltas = stream_words(ANSWER_LONG)

    def guarded() -> str:
        guard = StreamGuard(policy)
        return "".join(guard.feed(d) for d in deltas) + guard.finish()

    total = p50_ms(guarded, repeats)
    print(f"  stream guard, long answer in {len(deltas)} deltas: p50 {total * 1000:8.1f} us "
          f"({total * 1000 / len(deltas):.1f} us per delta)")
    bench_hold_back(policy)


def bench_hold_back(policy: TextPolicy) -> None:
    texts = corpus()
    for label, chunking in (("one character per delta", list), ("word-sized deltas", stream_words)):
        delays, held = [], []
        for text in texts:
            chunks = chunking(text)
            guard = StreamGuard(policy)
            for chunk in chunks:
                guard.feed(chunk)
            guard.finish()
            assert guard.stats.first_release_after is not None
            delays.append(guard.stats.first_release_after - len(chunks[0]))
            held.append(guard.stats.max_held)
        print(f"  first-token delay over {len(texts)} demo texts, {label}: mean {statistics.mean(delays):.2f} chars, "
              f"max {max(delays)} chars; most held at once: {max(held)} chars")


def tokens(text: str) -> list[str]:
    """A demo answer as a model would stream it: words with their spaces, one CJK character each."""
    return re.findall(r"\s*[\u3000-\u9fff\uff00-\uffef]|\s*[^\s\u3000-\u9fff\uff00-\uffef]+", text)


def first_token_ms(server: InProcessServer, questions: list[str]) -> list[float]:
    """Milliseconds from sending each streamed request to its first content chunk, one at a time.

    Each stream is read to its end, so the next request never waits for a cancelled one.
    """
    samples = []
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        for question in questions:
            body = {"model": "fake-vl", "stream": True, "messages": [{"role": "user", "content": question}]}
            started = time.perf_counter()
            first = None
            with client.stream("POST", "/v1/chat/completions", json=body) as response:
                for line in response.iter_lines():
                    chunk = json.loads(line[6:]) if line.startswith("data: {") else None
                    if first is None and chunk and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                        first = (time.perf_counter() - started) * 1000
            assert first is not None, f"no content streamed for {question!r}"
            samples.append(first)
    return samples


def bench_stream_http(streams: int, token_ms: float) -> None:
    answers = [text for text in corpus() if len(text.strip()) > 3][:streams]
    scripted = {f"question {i}": tokens(answer) for i, answer in enumerate(answers)}
    figures = {}
    for label, text_policy in (("text policy off", False), ("text policy on", True)):
        engine = FakeEngine(token_delay_s=token_ms / 1000, scripted=scripted)
        with InProcessServer(engine, safety_image_detector="off", safety_text_policy=text_policy,
                             max_wait_ms=0) as server:
            first_token_ms(server, list(scripted)[:4])  # warm-up
            figures[label] = first_token_ms(server, list(scripted))
    for label, samples in figures.items():
        p99 = statistics.quantiles(samples, n=100, method="inclusive")[98]
        print(f"  HTTP time to first token, {label:16s} p50 {statistics.median(samples):6.2f} ms   "
              f"mean {statistics.mean(samples):6.2f} ms   p99 {p99:6.2f} ms "
              f"({len(samples)} demo texts at {token_ms:g} ms/token)")
    on, off = figures["text policy on"], figures["text policy off"]
    median, mean = statistics.median(on) - statistics.median(off), statistics.mean(on) - statistics.mean(off)
    print(f"  added by text screening (prompt check and stream guard): {median:+.2f} ms at the median, "
          f"{mean:+.2f} ms on average")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=51, help="timed calls per figure (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads for NudeNet")
    parser.add_argument("--streams", type=int, default=100, help="streamed answers per HTTP figure")
    parser.add_argument("--token-ms", type=float, default=20.0, help="FakeEngine milliseconds per token")
    args = parser.parse_args()
    bench_images(args.repeats, args.threads)
    bench_text(args.repeats)
    bench_stream_http(args.streams, args.token_ms)


if __name__ == "__main__":
    main()
