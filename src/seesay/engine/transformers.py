"""The local engine: any Qwen-VL family checkpoint, run with Hugging Face transformers.

Contract (see :mod:`seesay.engine.base`): ``prepare`` renders the conversation with the
model's own chat template and runs the model's own processor on the already normalised
images, then refuses a request whose prompt plus output would not fit in
``max_model_len``; ``generate`` left-pads a batch into one ``model.generate`` call, samples
every row with its own settings (:mod:`seesay.engine.sampling`) and stops, streams and
cancels every row on its own (:mod:`seesay.engine.decoding`). Only new tokens are decoded,
without special tokens. Token ids stay integer tensors; only pixel values take the model's
dtype. The vision tower's patch embedding runs as a matrix multiply
(:mod:`seesay.engine.patch_embedding`), with the checkpoint's own weights.

LoRA adapters (:mod:`seesay.engine.peft_adapters`) load and unload at any time; loading waits
for the batch being generated, since it changes the model's layers. Rows of different adapters
and of the base model share one ``generate`` call when PEFT can mix them
(``PreparedRequest.batch_group`` is then ``None`` for every request); otherwise requests batch by
adapter, and a batch that still mixes them (an adapter loaded after it was prepared) runs one
``generate`` call per adapter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, GenerationConfig
from transformers.utils import cached_file

from seesay.engine.adapters import AdapterSource, LoadedAdapter
from seesay.engine.base import Engine, EngineInfo, GenerationObserver, PreparedRequest, request_budget
from seesay.engine.config import TransformersEngineConfig
from seesay.engine.decoding import AnswerText, BatchStopper, RowState
from seesay.engine.device import DevicePlan, plan_device
from seesay.engine.fingerprint import engine_fingerprint, folder_identities
from seesay.engine.patch_embedding import linearise_patch_embeddings
from seesay.engine.peft_adapters import PeftAdapterSet
from seesay.engine.processor import load_processor, processor_pixel_budget
from seesay.engine.registry import register_engine
from seesay.engine.sampling import ResolvedSampling, RowSampler, model_defaults, resolve_sampling
from seesay.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    ModelLoadError,
    ModelNotFoundError,
    SeesayError,
)
from seesay.images import NormalizedImage, PixelBudget
from seesay.types import ChatMessage, GenerationRequest, GenerationResult, ImagePart, Timings, Usage

log = logging.getLogger(__name__)

_FLOAT_INPUTS = ("pixel_values",)
_IMAGE_INPUTS = ("pixel_values", "image_grid_thw")  # one entry per image, concatenated in row order


@dataclass(frozen=True)
class ModelInputs:
    """One request's processor output (batch dimension 1, unpadded) and its sampling."""

    tensors: dict[str, torch.Tensor]
    sampling: ResolvedSampling


class TransformersEngine(Engine):
    """Runs a Qwen-VL checkpoint in this process (see module docstring)."""

    def __init__(self, config: TransformersEngineConfig) -> None:
        self.config = config
        self.plan: DevicePlan = plan_device(config.device, config.dtype, config.attention)
        if config.cpu_threads is not None:
            torch.set_num_threads(config.cpu_threads)
        source = config.model_source
        hub = {"revision": config.revision} if config.revision else {}
        log.info("loading %s on %s (%s, %s)", source, self.plan.device, self.plan.dtype_name, self.plan.attention)
        try:
            self.processor = load_processor(source, trust_remote_code=config.trust_remote_code, **hub)
            self.model = load_model(source, self.plan, config.trust_remote_code, hub)
        except ModelLoadError:
            raise
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load model '{source}': {exc}") from exc
        self.tokenizer: Any = self.processor.tokenizer
        self.image_token_id = int(self.processor.image_token_id)  # type: ignore[attr-defined]
        self.pixel_budget = self._pixel_budget()
        self.sampling_defaults = model_defaults(self.model.generation_config.to_dict())
        self.eos_token_ids = _eos_token_ids(self.model.generation_config, self.tokenizer)
        self.pad_token_id = self._pad_token_id()
        self.fingerprint = self._fingerprint(source, hub)
        # Fast tokenizers are not safe to call from several threads at once ("Already borrowed").
        self._processor_lock = threading.Lock()
        # Loading an adapter changes the model's layers: never while a batch is generated.
        self._model_lock = threading.Lock()
        self.adapters = PeftAdapterSet(self.model, config.model_name, source)

    # -- Engine API -------------------------------------------------------------------------

    def prepare(self, request: GenerationRequest) -> PreparedRequest:
        started = time.perf_counter()
        if request.adapter is not None and request.adapter not in self.adapters:
            raise ModelNotFoundError(f"the LoRA adapter '{request.adapter}' is not loaded", param="model")
        sampling = resolve_sampling(request.sampling, self.sampling_defaults)
        budget = request_budget(self.pixel_budget, request.pixel_budget)
        tensors = self._process(request.messages, budget)
        prompt_tokens = int(tensors["input_ids"].shape[1])
        image_tokens = int((tensors["input_ids"] == self.image_token_id).sum())
        max_new_tokens = self._max_new_tokens(request, prompt_tokens, image_tokens)
        group: Hashable = None if self.adapters.mixable else request.adapter
        return PreparedRequest(request, prompt_tokens, image_tokens, max_new_tokens,
                               time.perf_counter() - started, ModelInputs(tensors, sampling), batch_group=group)

    def generate(self, batch: Sequence[PreparedRequest],
                 observer: GenerationObserver | None = None) -> list[GenerationResult]:
        if not batch:
            return []
        results: list[GenerationResult | None] = [None] * len(batch)
        with self._model_lock:
            groups = self.adapters.row_groups([p.request.adapter for p in batch])
            for rows in groups:
                part_observer = observer if len(groups) == 1 or observer is None else _RowSubset(observer, rows)
                for row, result in zip(rows, self._generate_together([batch[r] for r in rows], part_observer),
                                       strict=True):
                    results[row] = result
        return [result for result in results if result is not None]

    def load_adapter(self, source: AdapterSource) -> LoadedAdapter:
        with self._model_lock:
            return self.adapters.load(source)

    def unload_adapter(self, name: str) -> None:
        with self._model_lock:
            self.adapters.unload(name)

    def _generate_together(self, batch: Sequence[PreparedRequest],
                           observer: GenerationObserver | None) -> list[GenerationResult]:
        """One ``generate`` call for ``batch``, each row with its own adapter and sampling."""
        started = time.perf_counter()
        inputs, prompt_lengths = self._collate(batch)
        padded_length = int(inputs["input_ids"].shape[1])
        rows = [RowState(AnswerText(self._decode, p.request.sampling.stop), p.max_new_tokens) for p in batch]
        sampler = RowSampler([_inputs(p).sampling for p in batch], prompt_lengths, padded_length, self.plan.device)
        stopper = BatchStopper(rows, self.eos_token_ids, observer)
        with torch.inference_mode(), self.adapters.selecting([p.request.adapter for p in batch]) as adapter_args:
            self.adapters.model.generate(
                **inputs,
                **adapter_args,
                generation_config=self._generation_config(max(p.max_new_tokens for p in batch)),
                logits_processor=[sampler],
                stopping_criteria=[stopper],
            )
        return [_result(p, row, started) for p, row in zip(batch, rows, strict=True)]

    def info(self) -> EngineInfo:
        return EngineInfo(
            engine="transformers",
            model=self.config.model_name,
            device=self.plan.device if self.plan.device_map is None else f"{self.plan.device_map} (sharded)",
            dtype=self.plan.dtype_name,
            attention=self.plan.attention,
            pixel_budget=self.pixel_budget,
            max_model_len=self.config.max_model_len,
            fingerprint=self.fingerprint,
            default_temperature=self.sampling_defaults.temperature,
            parameters=sum(p.numel() for p in self.model.parameters()),
        )

    def close(self) -> None:
        del self.model, self.adapters
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _fingerprint(self, source: str, hub: dict[str, Any]) -> str:
        config_file = cached_file(source, "config.json", **hub)
        if config_file is None:
            raise ModelLoadError(f"cannot locate the files of '{source}'")
        defaults = {
            "sampling": asdict(self.sampling_defaults),
            "default_max_new_tokens": self.config.default_max_new_tokens,
            "max_model_len": self.config.max_model_len,
            "pixel_budget": asdict(self.pixel_budget),
            "chat_template": self.processor.chat_template,
            "dtype": self.plan.dtype_name,
        }
        return engine_fingerprint(self.config.model_name, folder_identities(Path(config_file).parent), defaults)

    # -- preparation ------------------------------------------------------------------------

    def _pixel_budget(self) -> PixelBudget:
        return processor_pixel_budget(self.processor, self.config.min_pixels, self.config.max_pixels)

    def _process(self, messages: Sequence[ChatMessage], budget: PixelBudget) -> dict[str, torch.Tensor]:
        if not messages:
            raise InvalidRequestError("messages must not be empty", param="messages")
        pictures = [part.image for m in messages for part in m.content if isinstance(part, ImagePart)]
        for index, picture in enumerate(pictures):
            _check_normalised(index, picture, budget)
        images = [picture.image for picture in pictures]
        prompt = self.processor.apply_chat_template(
            [m.as_template() for m in messages], add_generation_prompt=True, tokenize=False
        )
        kwargs: dict[str, Any] = {"text": [prompt], "return_tensors": "pt"}
        if images:
            # Intake already resized each picture exactly as the processor would (seesay.images);
            # resizing again is not idempotent for narrow budgets, so the processor must not.
            kwargs["images"] = images
            kwargs["do_resize"] = False
        with self._processor_lock:
            return dict(self.processor(**kwargs))

    def _max_new_tokens(self, request: GenerationRequest, prompt_tokens: int, image_tokens: int) -> int:
        limit = self.config.max_model_len
        asked = request.sampling.max_new_tokens
        if asked is not None and asked < 1:
            raise InvalidRequestError(f"max_new_tokens must be at least 1, got {asked}", param="max_tokens")
        wanted = asked if asked is not None else 1
        if prompt_tokens + wanted > limit:
            raise ContextLengthExceededError(
                f"this request needs {prompt_tokens} prompt tokens ({image_tokens} of them for "
                f"{len(request.images)} image(s)) plus {wanted} output tokens = {prompt_tokens + wanted}, "
                f"which is {prompt_tokens + wanted - limit} over the context limit of {limit}; send fewer "
                "images, a smaller pixel budget (max_pixels), a shorter history or a smaller max_tokens",
                param="messages",
            )
        return asked if asked is not None else min(self.config.default_max_new_tokens, limit - prompt_tokens)

    # -- generation -------------------------------------------------------------------------

    def _collate(self, batch: Sequence[PreparedRequest]) -> tuple[dict[str, torch.Tensor], list[int]]:
        """Left-pad the rows into one batch; concatenate their image tensors in row order."""
        rows = [_inputs(p).tensors for p in batch]
        lengths = [int(r["input_ids"].shape[1]) for r in rows]
        width = max(lengths)
        pads = {"input_ids": self.pad_token_id}
        collated: dict[str, torch.Tensor] = {}
        for key in dict.fromkeys(k for r in rows for k in r):  # text-only rows have no image tensors
            parts = [r[key] for r in rows if key in r]
            if key in _IMAGE_INPUTS:
                collated[key] = torch.cat(parts, dim=0)
            elif len(parts) == len(rows):
                collated[key] = torch.cat([_left_pad(t, width, pads.get(key, 0)) for t in parts], dim=0)
            else:
                raise ValueError(f"processor output '{key}' is missing for some rows; cannot batch them")
        return self._to_device(collated), lengths

    def _to_device(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device = self.model.device
        return {
            key: value.to(device, dtype=self.plan.dtype) if key in _FLOAT_INPUTS else value.to(device)
            for key, value in tensors.items()
        }

    def _generation_config(self, max_new_tokens: int) -> GenerationConfig:
        # Sampling happens in RowSampler; generate itself only takes the chosen token.
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=sorted(self.eos_token_ids),
            pad_token_id=self.pad_token_id,
        )

    def _decode(self, token_ids: list[int]) -> str:
        return str(self.tokenizer.decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def _pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.model.generation_config.pad_token_id
        return int(pad if pad is not None else min(self.eos_token_ids))


class _RowSubset:
    """The observer of some rows of a batch, seen as a batch of their own (row ``i`` is ``rows[i]``)."""

    def __init__(self, observer: GenerationObserver, rows: Sequence[int]) -> None:
        self._observer = observer
        self._rows = rows

    def on_text(self, row: int, delta: str) -> None:
        self._observer.on_text(self._rows[row], delta)

    def is_cancelled(self, row: int) -> bool:
        return self._observer.is_cancelled(self._rows[row])


def _check_normalised(index: int, picture: NormalizedImage, budget: PixelBudget) -> None:
    """Refuse a picture the model cannot take under ``budget``, saying whose mistake it is.

    Intake (:func:`seesay.images.load_image`) always produces a size that passes, so a picture at
    the size intake would choose that still fails is a bug in seesay (500); any other size is a
    picture that did not go through intake with this budget (400).
    """
    (width, height), f = picture.size, budget.factor
    if width % f == 0 and height % f == 0 and width * height <= budget.max_pixels:
        return
    rule = f"both sides multiples of {f} px, at most {budget.max_pixels:,} px in all"
    source_w, source_h = picture.source_size
    fitted = budget.target_size(source_w, source_h)
    if picture.size == fitted:
        log.error("intake sized a %dx%d picture to %dx%d, outside %s", source_w, source_h, width, height, budget)
        raise SeesayError(
            f"image {index}: seesay resized this {source_w}x{source_h} picture to {width}x{height}, which breaks "
            f"the model's pixel budget ({rule}). This is a bug in seesay; please report it with the picture's "
            "size. Until it is fixed, send the picture resized to a size that meets that rule, or another "
            "pixel budget (\"seesay\": {\"max_pixels\": ...})",
            param="messages",
        )
    raise InvalidRequestError(
        f"image {index} is {width}x{height}, not normalised for this request's pixel budget ({rule}); "
        f"pass it through seesay.images.load_image with that budget, which makes it {fitted[0]}x{fitted[1]}",
        param="messages",
    )


def _inputs(prepared: PreparedRequest) -> ModelInputs:
    if not isinstance(prepared.payload, ModelInputs):
        raise TypeError("this request was prepared by another engine")
    return prepared.payload


def _left_pad(tensor: torch.Tensor, width: int, value: int) -> torch.Tensor:
    missing = width - tensor.shape[1]
    if missing == 0:
        return tensor
    pad = torch.full((tensor.shape[0], missing), value, dtype=tensor.dtype)
    return torch.cat([pad, tensor], dim=1)


def _eos_token_ids(generation_config: GenerationConfig, tokenizer: Any) -> set[int]:
    configured = generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [] if configured is None else [configured])
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        raise ModelLoadError("the model defines no end-of-sequence token (generation_config.eos_token_id)")
    return ids


def _result(prepared: PreparedRequest, row: RowState, started: float) -> GenerationResult:
    now = time.perf_counter()
    return GenerationResult(
        request_id=prepared.request.request_id,
        text=row.answer.text,
        finish_reason=row.finish_reason or "length",
        usage=Usage(prepared.prompt_tokens, row.completion_tokens, prepared.image_tokens),
        timings=Timings(
            preprocess_s=prepared.preprocess_s,
            first_token_s=None if row.first_token_at is None else row.first_token_at - started,
            generate_s=now - started,
        ),
    )


def load_model(source: str, plan: DevicePlan, trust_remote_code: bool, hub: dict[str, Any]) -> Any:
    """A Qwen-VL checkpoint placed by ``plan``, patch embeddings linearised, in eval mode."""
    kwargs: dict[str, Any] = {
        "dtype": plan.dtype,
        "attn_implementation": plan.attention,
        "trust_remote_code": trust_remote_code,
        "use_safetensors": True,
        **hub,
    }
    if plan.device_map is not None:
        kwargs["device_map"] = plan.device_map
    model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
    if plan.device_map is None:
        model.to(plan.device)  # type: ignore[arg-type]
    linearise_patch_embeddings(model)
    return model.eval()


@register_engine("transformers")
def create_transformers_engine(config: TransformersEngineConfig) -> TransformersEngine:
    return TransformersEngine(config)
