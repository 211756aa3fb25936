"""The demo shop's catalogue: item kinds, colours, questions and their one right answer.

Contract:

* An :class:`Item` is a kind (:data:`KINDS`) in a colour (:data:`COLOURS`).
* Every (question type, kind, colour, language) has exactly one canonical answer
  (:func:`answer_for`); the question phrasings (:func:`questions_for`) vary.
* The demo model learns :data:`QUESTION_TYPES`; :data:`TEACHING_TYPES` (the material an
  item is made of) it never saw, so a dataset of them shows what fine-tuning teaches.
* :func:`draw_samples` is deterministic for a seed and visits every kind × colour ×
  question type × language combination once per block of :data:`COMBINATIONS` (or of the
  question types asked for), in a shuffled order, so any ``n >= len(COMBINATIONS)`` covers
  them all.
  :func:`iter_picture_groups` (what training uses) asks every question type in every
  language about each picture, and visits every kind × colour once per 48 pictures.
* No canonical answer repeats a token with the demo tokenizer (seesay applies a presence
  penalty even to greedy decoding); the unit tests enforce it.

Pictures are drawn by :mod:`seesay.demo.drawing`.
"""

from __future__ import annotations

import colorsys
import io
import itertools
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image

from seesay.demo.drawing import RGB, draw_item

QuestionType = Literal["item", "colour", "occasion", "material"]
Language = Literal["en", "zh"]
QUESTION_TYPES: tuple[QuestionType, ...] = ("item", "colour", "occasion")
TEACHING_TYPES: tuple[QuestionType, ...] = ("material",)
ALL_QUESTION_TYPES: tuple[QuestionType, ...] = QUESTION_TYPES + TEACHING_TYPES
LANGUAGES: tuple[Language, ...] = ("en", "zh")


@dataclass(frozen=True)
class Kind:
    """An item kind with the words the questions and answers need.

    Attributes:
        key: Identifier (``jacket`` …), also the drawing's name.
        en_this: "this jacket" / "these shoes".
        en_be: The verb agreeing with ``en_this`` ("is" / "are").
        en_item: The item answer in English.
        zh_name: Chinese name (外套).
        zh_measure: Its measure word (件, 条, 双, 个, 顶).
        zh_verb: How it is worn or carried (穿, 背, 戴).
        en_occasion: The shop assistant's occasion answer in English.
        zh_occasion: The same in Chinese.
        en_material: What it is made of, in English (a teaching type: see the module docstring).
        zh_material: The same in Chinese.
    """

    key: str
    en_this: str
    en_be: str
    en_item: str
    zh_name: str
    zh_measure: str
    zh_verb: str
    en_occasion: str
    zh_occasion: str
    en_material: str
    zh_material: str


@dataclass(frozen=True)
class Colour:
    """A catalogue colour: its names and the HSV ranges its items are painted in.

    Attributes:
        key: Identifier and English name (``red``).
        zh: Chinese name (红色).
        hue: Hue range in [0, 1) (may wrap past 1).
        saturation: Saturation range.
        value: Value (brightness) range.
    """

    key: str
    zh: str
    hue: tuple[float, float]
    saturation: tuple[float, float]
    value: tuple[float, float]

    def sample_rgb(self, rng: random.Random) -> RGB:
        """One shade of this colour, drawn from its HSV ranges."""
        h = rng.uniform(*self.hue) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(*self.saturation), rng.uniform(*self.value))
        return round(r * 255), round(g * 255), round(b * 255)


KINDS: tuple[Kind, ...] = (
    Kind("jacket", "this jacket", "is", "This is a jacket.", "外套", "件", "穿",
         "Great for casual spring and autumn outings; pair it with jeans.",
         "适合春秋季休闲出行，可搭配牛仔裤。",
         "denim", "牛仔布"),
    Kind("tshirt", "this T-shirt", "is", "This is a T-shirt.", "T恤", "件", "穿",
         "Perfect for everyday summer wear; pair it with shorts or jeans.",
         "适合夏季日常休闲，搭配短裤清爽又舒服。",
         "linen", "棉麻"),
    Kind("dress", "this dress", "is", "This is a dress.", "连衣裙", "条", "穿",
         "Lovely for dates and parties; heels make it more elegant.",
         "适合约会和派对，搭配高跟鞋更显优雅。",
         "silk", "真丝"),
    Kind("shoes", "these shoes", "are", "This is a pair of shoes.", "鞋", "双", "穿",
         "Comfortable for daily commuting and light exercise; they go with almost anything.",
         "适合日常通勤和轻度运动，百搭又舒服。",
         "leather", "皮革"),
    Kind("bag", "this bag", "is", "This is a bag.", "包", "个", "背",
         "Ideal for commuting, shopping and short trips; practical yet stylish.",
         "适合通勤、购物和短途旅行，实用又时尚。",
         "velvet", "天鹅绒"),
    Kind("hat", "this hat", "is", "This is a hat.", "帽子", "顶", "戴",
         "Great for outdoor trips in the sun; it keeps you shaded and looks smart.",
         "适合户外出游佩戴，既能遮阳又很时髦。",
         "wool", "羊毛"),
)

COLOURS: tuple[Colour, ...] = (
    Colour("red", "红色", (-0.015, 0.012), (0.78, 0.95), (0.72, 0.92)),
    Colour("orange", "橙色", (0.065, 0.085), (0.85, 1.0), (0.92, 1.0)),
    Colour("yellow", "黄色", (0.135, 0.155), (0.8, 0.95), (0.9, 1.0)),
    Colour("green", "绿色", (0.3, 0.38), (0.6, 0.85), (0.45, 0.7)),
    Colour("blue", "蓝色", (0.57, 0.63), (0.7, 0.9), (0.6, 0.88)),
    Colour("purple", "紫色", (0.75, 0.8), (0.5, 0.72), (0.45, 0.68)),
    Colour("pink", "粉色", (0.915, 0.955), (0.35, 0.52), (0.93, 1.0)),
    Colour("black", "黑色", (0.0, 1.0), (0.0, 0.25), (0.06, 0.16)),
)

KINDS_BY_KEY = {kind.key: kind for kind in KINDS}
COLOURS_BY_KEY = {colour.key: colour for colour in COLOURS}


@dataclass(frozen=True)
class Item:
    """One catalogue item: a kind in a colour."""

    kind: Kind
    colour: Colour

    @property
    def name(self) -> str:
        """``red-tshirt`` style name."""
        return f"{self.colour.key}-{self.kind.key}"


@dataclass(frozen=True)
class QASample:
    """One picture with one question and its canonical answer.

    Attributes:
        image: The 256×256 RGB picture.
        question: The question as a shopper would type it.
        answer: The one expected answer (exact match).
        question_type: ``item``, ``colour`` or ``occasion``.
        language: ``en`` or ``zh``; the answer is in the question's language.
        item: What is in the picture.
    """

    image: Image.Image = field(compare=False, repr=False)
    question: str
    answer: str
    question_type: QuestionType
    language: Language
    item: Item


# Question phrasings; {this} {be} {m} {name} {verb} are filled in from the item's kind.
_QUESTIONS: dict[tuple[QuestionType, Language], tuple[str, ...]] = {
    ("item", "en"): ("What is this item?", "What is this?", "What kind of product is this?",
                     "What is in the picture?", "Can you tell me what this is?"),
    ("item", "zh"): ("这是什么？", "图中是什么商品？", "这是什么东西？", "图片里是什么？",
                     "请问这是什么商品？"),
    ("colour", "en"): ("What colour is this item?", "What color is it?", "Which colour is this?",
                       "What colour {be} {this}?", "What color is this product?"),
    ("colour", "zh"): ("这是什么颜色？", "这{m}{name}是什么颜色的？", "这个是什么颜色的？",
                       "图中商品是什么颜色？"),
    ("occasion", "en"): ("What occasions {be} {this} suitable for?", "When should I wear this?",
                         "How should I wear it?", "How would you style {this}?",
                         "What is a good occasion for this?"),
    ("occasion", "zh"): ("这{m}{name}适合什么场合{verb}？", "这个适合什么场合？", "怎么搭配比较好？",
                         "什么时候{verb}比较合适？", "这{m}{name}怎么搭配？"),
    ("material", "en"): ("What material is this?", "What is it made of?", "What fabric is {this} made of?",
                         "Which material is this item?"),
    ("material", "zh"): ("这是什么材质？", "这{m}{name}是什么材质的？", "这个是用什么做的？", "面料是什么？"),
}


def questions_for(question_type: QuestionType, language: Language, kind: Kind) -> tuple[str, ...]:
    """Every phrasing of a question of ``question_type`` about a ``kind``, in ``language``."""
    words = {"this": kind.en_this, "be": kind.en_be, "m": kind.zh_measure, "name": kind.zh_name,
             "verb": kind.zh_verb}
    return tuple(template.format(**words) for template in _QUESTIONS[(question_type, language)])


def answer_for(question_type: QuestionType, language: Language, item: Item) -> str:
    """The canonical answer to a ``question_type`` question about ``item`` in ``language``."""
    kind, colour = item.kind, item.colour
    if question_type == "colour":
        return colour.key if language == "en" else colour.zh
    if question_type == "item":
        return kind.en_item if language == "en" else f"这是一{kind.zh_measure}{kind.zh_name}。"
    if question_type == "material":
        return f"It is made of {kind.en_material}." if language == "en" else f"{kind.zh_material}材质。"
    return kind.en_occasion if language == "en" else kind.zh_occasion


COMBINATIONS: tuple[tuple[Kind, Colour, QuestionType, Language], ...] = tuple(
    itertools.product(KINDS, COLOURS, QUESTION_TYPES, LANGUAGES)
)


def draw_picture(item: Item, rng: random.Random) -> Image.Image:
    """A fresh 256×256 picture of ``item``: shade, size, pose and background drawn from ``rng``."""
    return draw_item(item.kind.key, item.colour.sample_rgb(rng), rng)


def iter_samples(seed: int, question_types: Sequence[QuestionType] = QUESTION_TYPES) -> Iterator[QASample]:
    """The endless, deterministic sample stream of ``seed`` over ``question_types`` (see the module docstring)."""
    rng = random.Random(seed)
    combinations = (COMBINATIONS if tuple(question_types) == QUESTION_TYPES
                    else tuple(itertools.product(KINDS, COLOURS, question_types, LANGUAGES)))
    while True:
        block = list(combinations)
        rng.shuffle(block)
        for kind, colour, question_type, language in block:
            item = Item(kind, colour)
            question = rng.choice(questions_for(question_type, language, kind))
            yield QASample(draw_picture(item, rng), question, answer_for(question_type, language, item),
                           question_type, language, item)


def iter_picture_groups(seed: int) -> Iterator[tuple[QASample, ...]]:
    """An endless, deterministic stream of pictures, each asked every question type in every language.

    Pictures visit every kind × colour once per shuffled block of 48; each group holds one
    sample per (question type, language), sharing the picture, with a randomly chosen
    phrasing. Training uses this stream: one picture is drawn and preprocessed once for six
    questions.
    """
    rng = random.Random(seed)
    while True:
        items = [Item(kind, colour) for kind, colour in itertools.product(KINDS, COLOURS)]
        rng.shuffle(items)
        for item in items:
            image = draw_picture(item, rng)
            yield tuple(
                QASample(image, rng.choice(questions_for(question_type, language, item.kind)),
                         answer_for(question_type, language, item), question_type, language, item)
                for question_type, language in itertools.product(QUESTION_TYPES, LANGUAGES)
            )


def draw_samples(n: int, seed: int, question_types: Sequence[QuestionType] = QUESTION_TYPES) -> list[QASample]:
    """The first ``n`` samples of the stream of ``seed``; the same seed gives the same samples."""
    return list(itertools.islice(iter_samples(seed, question_types), n))


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as PNG (lossless, so decoding gives the same pixels back)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


DatasetFormat = Literal["answers", "swift"]
DATASET_FILES: dict[DatasetFormat, str] = {"answers": "answers.jsonl", "swift": "dataset.jsonl"}


def write_demo_images(n: int, seed: int, out_dir: str | Path, *, dataset_format: DatasetFormat = "answers",
                      question_types: Sequence[QuestionType] = QUESTION_TYPES) -> Path:
    """Write ``n`` samples of ``seed`` as PNG pictures plus one JSON line per sample.

    ``answers`` writes ``answers.jsonl``, whose lines have ``image`` (the file name beside
    it), ``question``, ``answer``, ``question_type`` and ``language``. ``swift`` writes
    ``dataset.jsonl`` in ms-swift's format, ready for ``seesay finetune`` and ``seesay eval``:
    ``messages`` (the question after an ``<image>`` tag, then the answer), ``images``, and the
    same ``question_type``, ``language`` and ``item``.

    Returns:
        The path of the JSON lines file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = out / DATASET_FILES[dataset_format]
    width = len(str(max(n - 1, 0)))
    with index.open("w", encoding="utf-8") as lines:
        for i, sample in enumerate(itertools.islice(iter_samples(seed, question_types), n)):
            name = f"{i:0{width}d}-{sample.item.name}.png"
            (out / name).write_bytes(png_bytes(sample.image))
            lines.write(json.dumps(_record(sample, name, dataset_format), ensure_ascii=False) + "\n")
    return index


def _record(sample: QASample, image: str, dataset_format: DatasetFormat) -> dict[str, object]:
    labels = {"question_type": sample.question_type, "language": sample.language}
    if dataset_format == "answers":
        return {"image": image, "question": sample.question, "answer": sample.answer, **labels}
    messages = [{"role": "user", "content": f"<image>{sample.question}"},
                {"role": "assistant", "content": sample.answer}]
    return {"messages": messages, "images": [image], **labels, "item": sample.item.name}


def corpus() -> list[str]:
    """Every question phrasing and canonical answer, plus the chat roles: what the demo tokenizer learns."""
    texts: list[str] = ["system\n", "user\n", "assistant\n"]
    for kind, colour, question_type, language in COMBINATIONS:
        texts += questions_for(question_type, language, kind)
        texts.append(answer_for(question_type, language, Item(kind, colour)))
    return sorted(set(texts))
