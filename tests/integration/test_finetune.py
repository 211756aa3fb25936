"""seesay finetune / eval / merge on the real demo model: encoding, adapters, reports, resume, merge."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from PIL import Image
from transformers import AutoModelForImageTextToText

from checkpoint_format import assert_stock_checkpoint
from seesay.cli import main
from seesay.demo.catalogue import write_demo_images
from seesay.engine.config import TransformersEngineConfig, demo_model_dir
from seesay.engine.processor import load_processor, processor_pixel_budget
from seesay.engine.transformers import TransformersEngine
from seesay.finetune.datasets import DatasetError, load_dataset
from seesay.finetune.encoding import ConversationEncoder
from seesay.finetune.evaluate import evaluate_dataset
from seesay.finetune.merge import merge_adapter
from seesay.finetune.options import FinetuneConfig
from seesay.finetune.train import finetune
from seesay.images import load_image
from seesay.training.batches import IGNORE_INDEX, PictureStore
from seesay.training.checkpoints import CheckpointDir
from seesay.training.loop import TrainingInterrupted
from seesay.training.progress import LogLines

DEMO = str(demo_model_dir())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_images(24, 3, tmp_path_factory.mktemp("data"), dataset_format="swift")


@pytest.fixture(scope="module")
def processor() -> object:
    return load_processor(DEMO)


def quick(dataset: Path, out: Path, **options: object) -> FinetuneConfig:
    """A few steps of the product defaults (r=8, alpha 32, q_proj/v_proj of the language model)."""
    return replace(FinetuneConfig(base=DEMO, data=(dataset,), out=out, steps=6, batch_size=4, grad_accumulation=1,
                                  checkpoint_every=2, threads=1), **options)  # type: ignore[arg-type]


def test_encoded_prompt_is_what_the_engine_sends_and_only_answers_are_labelled(processor: object,
                                                                                dataset: Path) -> None:
    budget = processor_pixel_budget(processor)  # type: ignore[arg-type]
    encoder = ConversationEncoder(processor, budget, max_length=2048)
    conversation = load_dataset(dataset)[0]
    pictures = PictureStore()
    row = encoder.encode(conversation, pictures)
    messages = conversation.chat_messages(lambda path: load_image(path.read_bytes(), budget), prompt_only=True)
    prompt = processor.apply_chat_template([m.as_template() for m in messages],  # type: ignore[attr-defined]
                                           add_generation_prompt=True, tokenize=False)
    picture = messages[0].images[0].image
    served = processor(text=[prompt], images=[picture], do_resize=False, return_tensors="pt")  # type: ignore[operator]
    prompt_ids = served["input_ids"][0].tolist()
    assert row.input_ids[: len(prompt_ids)] == prompt_ids
    assert row.mm_token_type_ids[: len(prompt_ids)] == served["mm_token_type_ids"][0].tolist()
    assert set(row.labels[: len(prompt_ids)]) == {IGNORE_INDEX}
    learned = [label for label in row.labels if label != IGNORE_INDEX]
    assert processor.tokenizer.decode(learned) == conversation.answer + "<|im_end|>"  # type: ignore[attr-defined]
    torch.testing.assert_close(pictures.pixel_values(list(row.pictures)), served["pixel_values"], atol=1e-6, rtol=0)


def test_every_assistant_turn_of_a_conversation_is_labelled(processor: object, tmp_path: Path) -> None:
    Image.new("RGB", (64, 64), "red").save(tmp_path / "red.png")
    record = {"messages": [{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": "<image>Colour?"}, {"role": "assistant", "content": "red"},
                           {"role": "user", "content": "Sure?"}, {"role": "assistant", "content": "yes"}],
              "images": ["red.png"]}
    (tmp_path / "chat.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    encoder = ConversationEncoder(processor, processor_pixel_budget(processor), 2048)  # type: ignore[arg-type]
    row = encoder.encode(load_dataset(tmp_path / "chat.jsonl")[0], PictureStore())
    spans = "".join(processor.tokenizer.decode([t]) if label != IGNORE_INDEX else "\n"  # type: ignore[attr-defined]
                    for t, label in zip(row.input_ids, row.labels, strict=True))
    assert spans.split() == ["red<|im_end|>", "yes<|im_end|>"]


def test_records_over_the_length_limit_are_named_not_cut(processor: object, dataset: Path) -> None:
    encoder = ConversationEncoder(processor, processor_pixel_budget(processor), max_length=20)  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match=r"dataset.jsonl line 1: \d+ tokens, over the limit of 20"):
        encoder.encode_all(load_dataset(dataset), dataset)


@pytest.fixture(scope="module")
def trained(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("adapter")
    finetune(quick(dataset, out, eval_data=dataset, eval_every=3), progress=LogLines(lambda _l: None, 1),
             report=lambda _l: None)
    return out


def test_adapter_is_a_standard_peft_folder_training_under_one_percent(trained: Path) -> None:
    config = json.loads((trained / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (8, 32, 0.1)
    assert config["target_modules"] == r".*language_model.*\.(q_proj|v_proj)"
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(DEMO), str(trained))
    lora = [name for name, _ in model.named_parameters() if "lora_" in name]
    assert lora and all("language_model" in name for name in lora)
    report = json.loads((trained / "training_report.json").read_text())
    assert 0 < report["trainable_share"] < 0.01
    assert report["steps"] == 6 and len(report["losses"]) == 6 and len(report["learning_rates"]) == 6
    assert [e["step"] for e in report["evaluations"]] == [3, 6]
    assert report["peak_memory_mb"]["process_rss"] > 0 and report["sequences_per_second"] > 0
    with Image.open(trained / "training_loss.png") as plot:
        assert plot.size == (800, 450)


def test_interrupted_run_resumes_to_the_same_weights(dataset: Path, trained: Path, tmp_path: Path) -> None:
    class StopAt(LogLines):
        def stepped(self, step: int, loss: float, lr: float, samples_per_second: float) -> None:
            if step == 3:
                raise KeyboardInterrupt

    config = quick(dataset, tmp_path, eval_data=dataset, eval_every=3)
    with pytest.raises(TrainingInterrupted, match=r"interrupted at step 3.*--resume"):
        finetune(config, progress=StopAt(lambda _l: None, 1), report=lambda _l: None)
    assert CheckpointDir(tmp_path / "checkpoints").latest().step == 3  # type: ignore[union-attr]
    (tmp_path / "checkpoints" / ".writing-leftover").mkdir()  # a write cut short is not a checkpoint
    finetune(config, resume=True, progress=LogLines(lambda _l: None, 1), report=lambda _l: None)
    resumed = (tmp_path / "adapter_model.safetensors").read_bytes()
    assert resumed == (trained / "adapter_model.safetensors").read_bytes()
    with pytest.raises(ValueError, match=r"other settings \(lr\)"):
        finetune(replace(config, lr=1e-3), resume=True, progress=LogLines(lambda _l: None, 1),
                 report=lambda _l: None)


def test_merged_model_is_a_stock_checkpoint_answering_like_the_adapter(trained: Path, tmp_path: Path) -> None:
    merged = merge_adapter(DEMO, trained, tmp_path / "merged")
    assert_stock_checkpoint(merged)
    assert not (merged / "adapter_config.json").exists()
    processor = load_processor(merged)
    batch = processor(text=["<|im_start|>user\nWhat is this?<|im_end|>\n<|im_start|>assistant\n"],
                      return_tensors="pt")
    base = AutoModelForImageTextToText.from_pretrained(DEMO).eval()
    with torch.no_grad():
        adapted = PeftModel.from_pretrained(base, str(trained)).eval()(**batch).logits
        folded = AutoModelForImageTextToText.from_pretrained(merged).eval()(**batch).logits
    torch.testing.assert_close(folded, adapted, atol=1e-4, rtol=1e-4)


def test_eval_with_an_adapter_answers_as_the_merged_model(lora_adapters: dict[str, Path], dataset: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    adapter = lora_adapters["shop"]  # strong enough to change answers
    merged = merge_adapter(DEMO, adapter, tmp_path / "merged")
    reports = []
    for argv in (["--model", str(merged)], ["--adapter", str(adapter)], []):
        assert main(["eval", *argv, "--data", str(dataset), "--json", "--batch-size", "12"]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    folded, adapted, base = reports
    assert adapted["adapter"] == "evaluated-adapter" and base["adapter"] is None
    assert adapted["exact_match"] == folded["exact_match"] and adapted["groups"] == folded["groups"]
    assert adapted["failures"] == folded["failures"]
    assert adapted["exact_match"] != base["exact_match"], "the adapter should change the answers"


def test_eval_scores_a_dataset_by_question_type(dataset: Path) -> None:
    engine = TransformersEngine(TransformersEngineConfig(model=DEMO, cpu_threads=1))
    try:
        report = evaluate_dataset(engine, load_dataset(dataset), batch_size=8)
    finally:
        engine.close()
    assert report.exact.total == 24 and set(report.groups) == {"item", "colour", "occasion"}
    assert report.exact.accuracy >= 0.9  # the shipped model knows the catalogue
    assert report.normalised.correct >= report.exact.correct
    assert sum(exact.total for exact, _ in report.groups.values()) == 24


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
