"""Fine-tuning benchmark: seesay's training loop against plain transformers + peft, same data and model.

Both train the same LoRA (the product defaults: r=8, alpha 32, dropout 0.1 on the language model's
q_proj/v_proj) of the demo model for the same steps of the same batch size on the same ms-swift
dataset drawn from the demo catalogue, on the CPU with one torch thread:

  * **seesay**: ``seesay.finetune.train.finetune`` — every record checked and encoded once
    (pictures kept as uint8 patches), then the shared loop;
  * **baseline**: what a user writes from the transformers and peft documentation — a
    ``torch.utils.data.Dataset`` of the records, a collator that renders the chat template and runs
    the processor on each batch (labels masked to the assistant's answer), ``get_peft_model`` and
    ``transformers.Trainer``.

Each run is a fresh process (so peak RSS is its own). Prints, per trainer, the median over the
repeats of training samples/s (optimiser steps only), end-to-end samples/s (data preparation
included) and peak RSS, and the ratios seesay / baseline. Usage:
python bench/finetune.py [--steps N] [--repeats N] [--samples N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BATCH = 8


def run_seesay(data: Path, out: Path, steps: int) -> dict[str, float]:
    from seesay.engine.config import demo_model_dir
    from seesay.finetune.options import FinetuneConfig
    from seesay.finetune.train import finetune
    from seesay.training.progress import LogLines

    started = time.perf_counter()
    result = finetune(FinetuneConfig(base=str(demo_model_dir()), data=(data,), out=out, steps=steps,
                                     batch_size=BATCH, grad_accumulation=1, threads=1, checkpoint_every=10**9),
                      progress=LogLines(lambda _line: None, 10**9), report=lambda _line: None)
    total = time.perf_counter() - started
    return {"train_samples_per_s": result.report.sequences_per_second,
            "end_to_end_samples_per_s": steps * BATCH / total}


def run_baseline(data: Path, out: Path, steps: int) -> dict[str, float]:
    import torch
    from peft import LoraConfig, get_peft_model
    from PIL import Image
    from transformers import AutoModelForImageTextToText, Trainer, TrainingArguments

    from seesay.engine.config import demo_model_dir
    from seesay.engine.processor import load_processor

    torch.set_num_threads(1)
    started = time.perf_counter()
    folder = data.parent
    records = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    processor = load_processor(demo_model_dir())
    model = AutoModelForImageTextToText.from_pretrained(demo_model_dir())
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1, task_type="CAUSAL_LM",
                                             target_modules=r".*language_model.*\.(q_proj|v_proj)"))

    def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        prompts, texts, images = [], [], []
        for record in batch:
            question, answer = record["messages"][0]["content"], record["messages"][1]["content"]
            user = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": question.replace("<image>", "")}]}]
            prompt = processor.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
            prompts.append(prompt)
            texts.append(prompt + answer + "<|im_end|>")
            images.append(Image.open(folder / record["images"][0]).convert("RGB"))
        encoded = processor(text=texts, images=images, return_tensors="pt", padding=True)
        prompt_lengths = [len(ids) for ids in processor(text=prompts, images=images)["input_ids"]]
        labels = encoded["input_ids"].clone()
        for row, length in enumerate(prompt_lengths):  # left padding: the answer is the row's tail
            pad = int((encoded["attention_mask"][row] == 0).sum())
            labels[row, : pad + length] = -100
        encoded["labels"] = labels
        return dict(encoded)

    arguments = TrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=BATCH,
                                  learning_rate=1e-4, lr_scheduler_type="cosine", warmup_steps=round(0.05 * steps),
                                  logging_strategy="no", save_strategy="no", report_to=[], use_cpu=True,
                                  dataloader_num_workers=0, remove_unused_columns=False, seed=0,
                                  disable_tqdm=True)
    trainer = Trainer(model=model, args=arguments, train_dataset=records, data_collator=collate)  # type: ignore[arg-type]
    output = trainer.train()
    total = time.perf_counter() - started
    return {"train_samples_per_s": float(output.metrics["train_samples_per_second"]),
            "end_to_end_samples_per_s": steps * BATCH / total}


def one_run(trainer: str, data: Path, steps: int) -> dict[str, float]:
    """Train in this process and return its figures with its peak RSS (MiB)."""
    import resource

    with tempfile.TemporaryDirectory() as out:
        figures = (run_seesay if trainer == "seesay" else run_baseline)(data, Path(out), steps)
    figures["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=512, help="records in the dataset")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--run", choices=("seesay", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(one_run(args.run, args.data, args.steps)))
        return
    from seesay.demo.catalogue import ALL_QUESTION_TYPES, write_demo_images

    with tempfile.TemporaryDirectory() as folder:
        data = write_demo_images(args.samples, 1, folder, dataset_format="swift", question_types=ALL_QUESTION_TYPES)
        runs: dict[str, list[dict[str, float]]] = {"seesay": [], "baseline": []}
        for _ in range(args.repeats):
            for trainer in runs:  # alternate, so drift on a shared machine hits both alike
                command = [sys.executable, __file__, "--run", trainer, "--data", str(data), "--steps", str(args.steps)]
                output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                runs[trainer].append(json.loads(output.strip().splitlines()[-1]))
    medians = {trainer: {key: statistics.median(run[key] for run in results) for key in results[0]}
               for trainer, results in runs.items()}
    ratios = {key: medians["seesay"][key] / medians["baseline"][key] for key in medians["seesay"]}
    if args.json:
        print(json.dumps({"medians": medians, "seesay_over_baseline": ratios}, indent=2))
        return
    print(f"LoRA r=8 q/v on the demo model, {args.steps} steps of batch {BATCH}, {args.samples} records, "
          f"1 thread, medians of {args.repeats}")
    print(f"{'':22}{'train samples/s':>18}{'end-to-end samples/s':>22}{'peak RSS MiB':>14}")
    for trainer, figures in medians.items():
        print(f"{trainer:22}{figures['train_samples_per_s']:18.1f}{figures['end_to_end_samples_per_s']:22.1f}"
              f"{figures['peak_rss_mib']:14.0f}")
    print(f"{'seesay / baseline':22}{ratios['train_samples_per_s']:17.2f}x{ratios['end_to_end_samples_per_s']:21.2f}x"
          f"{ratios['peak_rss_mib']:13.2f}x")


if __name__ == "__main__":
    main()
