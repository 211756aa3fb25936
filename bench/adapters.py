"""LoRA adapter benchmark: what serving adapters costs, on batches of 8 greedy requests.

Prints medians over several runs, each pair measured in the same run on the same requests (so the
same answers and token counts):
  * base-only batch with no adapter loaded (the model is not wrapped in PEFT) vs with two adapters
    loaded but unused (PEFT's wrapper, adapters disabled): the cost of adapters to base-only traffic;
  * a mixed batch (adapter A, adapter B and the base model, row by row) in one ``generate`` call
    through PEFT's ``adapter_names`` vs the same rows split by adapter into three calls, as a server
    that batches by adapter would run them.

Adapters are r=8 LoRA on the language model's q/v projections, made on the fly (``tests/lora_adapters.py``).
The demo model is tiny, so the relative cost of the LoRA layers here is an upper bound for real
checkpoints, where the base layers dominate. Usage: python bench/adapters.py [--repeats N] [--new-tokens N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from engine import requests  # bench/ is on sys.path when this runs as a script
from seesay.engine.adapters import AdapterSource
from seesay.engine.config import TransformersEngineConfig
from seesay.engine.transformers import TransformersEngine
from seesay.types import GenerationRequest
from timing import median_seconds

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from lora_adapters import make_adapter  # the tests' adapter factory


def seconds(engine: TransformersEngine, batches: list[list[GenerationRequest]], repeats: int) -> float:
    """Median seconds to run ``batches`` one after another, one ``generate`` call each."""
    prepared = [[engine.prepare(r) for r in batch] for batch in batches]
    return median_seconds(lambda: [engine.generate(batch) for batch in prepared], repeats)


def measure(repeats: int, new_tokens: int) -> dict[str, float]:
    engine = TransformersEngine(TransformersEngineConfig(device="cpu"))
    base = requests(engine, 8, new_tokens)
    figures = {"base_plain_s": seconds(engine, [base], repeats)}
    with tempfile.TemporaryDirectory() as folder:
        for name, seed in (("a", 1), ("b", 2)):
            engine.load_adapter(AdapterSource(name, str(make_adapter(Path(folder) / name, seed))))
    figures["base_with_adapters_loaded_s"] = seconds(engine, [base], repeats)
    mixed = [replace(r, adapter=("a", "b", None)[i % 3]) for i, r in enumerate(base)]
    figures["mixed_one_call_s"] = seconds(engine, [mixed], repeats)
    by_adapter = [[r for r in mixed if r.adapter == name] for name in ("a", "b", None)]
    figures["mixed_split_by_adapter_s"] = seconds(engine, by_adapter, repeats)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = measure(args.repeats, args.new_tokens)
    if args.json:
        print(json.dumps(figures))
        return
    for name, value in figures.items():
        print(f"{name:28} {value * 1000:8.1f} ms")
    print(f"adapters loaded, base-only batch: {figures['base_with_adapters_loaded_s'] / figures['base_plain_s']:.2f}x; "
          f"mixed batch in one call: {figures['mixed_one_call_s'] / figures['mixed_split_by_adapter_s']:.2f}x "
          "the time split by adapter")


if __name__ == "__main__":
    main()
