"""Per-request sampling inside one batched ``generate`` call.

transformers applies one ``GenerationConfig`` to a whole batch. seesay instead samples every
row with its own settings, like vLLM's sampler: :class:`RowSampler` is a logits processor
that applies each row's penalties, temperature, top-k and top-p, draws the token with the
row's own random generator, and returns scores where only that token is finite. ``generate``
then runs greedily and picks exactly that token. So requests with different sampling
settings share a batch, and a request with a seed gets the same answer whatever else is in
its batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from seesay.errors import InvalidRequestError
from seesay.types import SamplingParams


@dataclass(frozen=True)
class ResolvedSampling:
    """Sampling settings with every default applied."""

    temperature: float
    top_p: float
    top_k: int
    presence_penalty: float
    frequency_penalty: float
    repetition_penalty: float
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


# Qwen3-VL Instruct model card: temperature 0.7, top_p 0.8, top_k 20, presence_penalty 1.5.
MODEL_CARD_DEFAULTS = ResolvedSampling(
    temperature=0.7, top_p=0.8, top_k=20, presence_penalty=1.5, frequency_penalty=0.0, repetition_penalty=1.0
)

_GENERATION_CONFIG_FIELDS = ("temperature", "top_p", "top_k", "repetition_penalty")


def model_defaults(generation_config: Mapping[str, object]) -> ResolvedSampling:
    """The model card defaults, overridden by what the checkpoint's generation config sets."""
    values = {name: getattr(MODEL_CARD_DEFAULTS, name) for name in ResolvedSampling.__dataclass_fields__}
    for name in _GENERATION_CONFIG_FIELDS:
        if generation_config.get(name) is not None:
            values[name] = type(values[name])(generation_config[name])
    return ResolvedSampling(**values)  # type: ignore[arg-type]


def resolve_sampling(params: SamplingParams, defaults: ResolvedSampling) -> ResolvedSampling:
    """Apply ``defaults`` to unset fields and check ranges.

    Raises:
        InvalidRequestError: a value outside its range, naming the parameter.
    """

    def pick(name: str) -> float:
        value = getattr(params, name)
        return getattr(defaults, name) if value is None else value

    resolved = ResolvedSampling(
        temperature=float(pick("temperature")),
        top_p=float(pick("top_p")),
        top_k=int(pick("top_k")),
        presence_penalty=float(pick("presence_penalty")),
        frequency_penalty=float(pick("frequency_penalty")),
        repetition_penalty=float(pick("repetition_penalty")),
        seed=params.seed,
    )
    _check_range("temperature", resolved.temperature, 0.0, 2.0)
    _check_range("top_p", resolved.top_p, 1e-6, 1.0)
    _check_range("top_k", resolved.top_k, 0, 1_000_000)
    _check_range("presence_penalty", resolved.presence_penalty, -2.0, 2.0)
    _check_range("frequency_penalty", resolved.frequency_penalty, -2.0, 2.0)
    _check_range("repetition_penalty", resolved.repetition_penalty, 0.01, 10.0)
    return resolved


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise InvalidRequestError(f"{name} must be between {low:g} and {high:g}, got {value:g}", param=name)


class RowSampler(LogitsProcessor):
    """Chooses the next token of every row with that row's settings (see module docstring).

    Args:
        settings: One entry per batch row.
        prompt_lengths: Unpadded prompt length of each row (rows are left-padded).
        padded_length: Length of the padded prompt block; tokens after it were generated.
        device: Where the logits live (for the random generators).
    """

    def __init__(self, settings: Sequence[ResolvedSampling], prompt_lengths: Sequence[int],
                 padded_length: int, device: torch.device | str) -> None:
        self.settings = list(settings)
        self.prompt_lengths = list(prompt_lengths)
        self.padded_length = padded_length
        self.generators = [self._generator(s.seed, device) for s in self.settings]

    @staticmethod
    def _generator(seed: int | None, device: torch.device | str) -> torch.Generator:
        generator = torch.Generator(device=device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        return generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = scores.float()
        chosen = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
        for row, setting in enumerate(self.settings):
            chosen[row] = self._choose(row, setting, self._penalised(row, setting, input_ids[row], logits[row]))
        picked = torch.full_like(logits, float("-inf"))
        picked.scatter_(1, chosen.unsqueeze(1), 0.0)
        return picked  # type: ignore[return-value]

    def _penalised(self, row: int, s: ResolvedSampling, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        generated = ids[self.padded_length:]
        if s.repetition_penalty != 1.0:
            seen = ids[self.padded_length - self.prompt_lengths[row]:]
            values = logits.gather(0, seen)
            values = torch.where(values > 0, values / s.repetition_penalty, values * s.repetition_penalty)
            logits = logits.scatter(0, seen, values)
        if generated.numel() and (s.presence_penalty or s.frequency_penalty):
            counts = torch.bincount(generated, minlength=logits.shape[0])[: logits.shape[0]].to(logits.dtype)
            logits = logits - s.frequency_penalty * counts - s.presence_penalty * (counts > 0).to(logits.dtype)
        return logits

    def _choose(self, row: int, s: ResolvedSampling, logits: torch.Tensor) -> torch.Tensor:
        if s.greedy:
            return logits.argmax()
        logits = logits / s.temperature
        if 0 < s.top_k < logits.shape[0]:
            kth = torch.topk(logits, s.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if s.top_p < 1.0:
            logits = _top_p_filter(logits, s.top_p)
        probs = torch.softmax(logits, dim=-1)
        return torch.multinomial(probs, 1, generator=self.generators[row])[0]


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability mass reaches ``top_p``."""
    sorted_logits, order = torch.sort(logits, descending=True)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    drop = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # mass before this token
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(0, order, sorted_logits)
