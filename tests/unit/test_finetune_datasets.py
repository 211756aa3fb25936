"""Fine-tuning datasets: ms-swift JSONL and LLaMA-Factory JSON read as they are, bad records named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from seesay.finetune.datasets import DatasetError, load_dataset


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "pics").mkdir()
    Image.new("RGB", (40, 30), "red").save(tmp_path / "pics" / "red.png")
    Image.new("RGB", (40, 30), "blue").save(tmp_path / "pics" / "blue.jpg")
    return tmp_path


def swift(question: str = "<image>What colour?", answer: str = "red", images: list[str] | None = None,
          **extra: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            "images": ["pics/red.png"] if images is None else images, **extra}


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                            for r in records), encoding="utf-8")
    return path


def test_ms_swift_jsonl_resolves_images_against_the_file_and_keeps_other_fields(folder: Path) -> None:
    data = write_jsonl(folder / "train.jsonl", [
        swift(question_type="colour", language="en"),
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "<image><image>Which is blue?"},
                      {"role": "assistant", "content": "The second."},
                      {"role": "user", "content": "And the first?"},
                      {"role": "assistant", "content": "Red."}],
         "images": ["pics/red.png", str(folder / "pics" / "blue.jpg")]},
    ])
    first, second = load_dataset(data)
    assert first.images == (folder / "pics" / "red.png",)
    assert first.fields == {"question_type": "colour", "language": "en"}
    assert first.where == "train.jsonl line 1" and first.answer == "red"
    assert [m.role for m in second.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert second.images[1] == folder / "pics" / "blue.jpg" and second.answer == "Red."


def test_llama_factory_json_with_messages_or_default_sharegpt_keys(folder: Path) -> None:
    (folder / "mllm.json").write_text(json.dumps([swift()]), encoding="utf-8")
    sharegpt = [{"conversations": [{"from": "human", "value": "<image>Colour?"}, {"from": "gpt", "value": "red"}],
                 "images": ["pics/red.png"]}]
    (folder / "sharegpt.json").write_text(json.dumps(sharegpt), encoding="utf-8")
    for name in ("mllm.json", "sharegpt.json"):
        (conversation,) = load_dataset(folder / name)
        assert [m.role for m in conversation.messages] == ["user", "assistant"]
        assert conversation.answer == "red" and conversation.where == f"{name} record 0"


def test_dataset_info_columns_and_tags_as_llama_factory_declares_them(folder: Path) -> None:
    records = [{"dialogue": [{"speaker": "customer", "text": "<image>颜色？"}, {"speaker": "bot", "text": "红色"}],
                "pictures": ["pics/red.png"]}]
    (folder / "shop.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    info = {"shop": {"file_name": "shop.json", "formatting": "sharegpt",
                     "columns": {"messages": "dialogue", "images": "pictures"},
                     "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "customer",
                              "assistant_tag": "bot"}},
            "other": {"file_name": "x.json"}}
    (folder / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")
    (conversation,) = load_dataset(folder, "shop")
    assert conversation.messages[0].content == "<image>颜色？" and conversation.answer == "红色"
    with pytest.raises(DatasetError, match=r"name one of its datasets .*other, shop"):
        load_dataset(folder / "dataset_info.json")
    with pytest.raises(DatasetError, match="'other' is formatted as alpaca"):
        load_dataset(folder, "other")


def test_every_bad_record_is_named_with_its_problem_before_anything_trains(folder: Path) -> None:
    (folder / "pics" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    data = write_jsonl(folder / "bad.jsonl", [
        swift(),
        '{"messages": [}',
        swift(images=["pics/missing.png"]),
        swift(images=["pics/broken.png"]),
        swift(question="What colour?"),
        swift(question="<image><image>Both?"),
        {"messages": [{"role": "user", "content": "<image>Hi"}], "images": ["pics/red.png"]},
        swift(answer="  "),
        {"messages": [{"role": "robot", "content": "x"}], "images": []},
        swift(images=["https://example.com/a.png"]),
        [1, 2],
    ])
    with pytest.raises(DatasetError) as caught:
        load_dataset(data)
    problems = caught.value.problems
    expected = {
        2: "not valid JSON", 3: "does not exist", 4: "is not a readable image",
        5: "0 <image> tag(s) in the user turns but 1 image(s)", 6: "2 <image> tag(s) in the user turns but 1",
        7: "no assistant turn", 8: "an assistant turn is empty", 9: "turn 0 has no known 'role'",
        10: "is a URL; download it", 11: "a record must be a JSON object",
    }
    for line, text in expected.items():
        assert any(p.startswith(f"bad.jsonl line {line}:") and text in p for p in problems), (line, problems)
    assert not any(p.startswith("bad.jsonl line 1:") for p in problems)
    assert str(data) in str(caught.value) and "nothing was trained" in str(caught.value)


def test_files_that_are_not_datasets_say_what_they_should_be(folder: Path) -> None:
    (folder / "object.json").write_text('{"messages": []}', encoding="utf-8")
    with pytest.raises(DatasetError, match="must be a list of records"):
        load_dataset(folder / "object.json")
    (folder / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="no records"):
        load_dataset(folder / "empty.jsonl")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(folder / "nope.jsonl")


def test_chat_messages_turn_image_tags_into_pictures_in_order(folder: Path) -> None:
    data = write_jsonl(folder / "two.jsonl", [
        {"messages": [{"role": "user", "content": "A <image> and <image>?"}, {"role": "assistant", "content": "ok"}],
         "images": ["pics/red.png", "pics/blue.jpg"]}])
    (conversation,) = load_dataset(data)
    read: list[Path] = []
    messages = conversation.chat_messages(lambda path: read.append(path) or len(read), prompt_only=True)  # type: ignore[arg-type, func-returns-value]
    assert read == list(conversation.images)
    (user,) = messages
    kinds = [type(part).__name__ for part in user.content]
    assert kinds == ["TextPart", "ImagePart", "TextPart", "ImagePart", "TextPart"]
    assert len(conversation.chat_messages(lambda path: None)) == 2  # type: ignore[arg-type, return-value]
