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
from seesay.types import SAMPLING_LIMITS, SEED_LIMITS, SamplingParams


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
    for name, (low, high) in SAMPLING_LIMITS.items():
        _check_range(name, getattr(resolved, name), low, high)
    if resolved.seed is not None and not SEED_LIMITS[0] <= resolved.seed <= SEED_LIMITS[1]:
        raise InvalidRequestError(f"seed must be between {SEED_LIMITS[0]} and {SEED_LIMITS[1]}, got {resolved.seed}",
                                  param="seed")
    return resolved


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise InvalidRequestError(f"{name} must be between {low:g} and {high:g}, got {value:g}", param=name)


class RowSampler(LogitsProcessor):
    """Chooses the next token of every row with that row's settings (see module docstring).

    Each step is a few batch-wide tensor operations whatever the batch size, as in vLLM's
    sampler: penalties from per-row token counts that grow by one token a step, one ``argmax``
    for every greedy row, and for the sampled rows one sort for top-k and top-p, then the
    exponential race (``argmax(p / E)`` with ``E ~ Exp(1)``, a draw from ``p``) whose noise
    each row takes from its own generator, so a seeded row's draws never depend on its
    neighbours.

    Args:
        settings: One entry per batch row.
        prompt_lengths: Unpadded prompt length of each row (rows are left-padded).
        padded_length: Length of the padded prompt block; tokens after it were generated.
        device: Where the logits live (for the random generators).
    """

    def __init__(self, settings: Sequence[ResolvedSampling], prompt_lengths: Sequence[int],
                 padded_length: int, device: torch.device | str) -> None:
        self.settings = list(settings)
        self.device = torch.device(device)
        self.sampled_rows = [row for row, s in enumerate(self.settings) if not s.greedy]
        self.generators = [self._generator(self.settings[row].seed, self.device) for row in self.sampled_rows]
        sampled = [self.settings[row] for row in self.sampled_rows]
        self._sampled_index = torch.tensor(self.sampled_rows, dtype=torch.long, device=self.device)
        self._temperature = torch.tensor([s.temperature for s in sampled], device=self.device).unsqueeze(1)
        self._top_k = [s.top_k for s in sampled]
        self._top_p = [s.top_p for s in sampled]
        self.penalties = TokenPenalties(self.settings, prompt_lengths, padded_length, self.device)

    @staticmethod
    def _generator(seed: int | None, device: torch.device) -> torch.Generator:
        generator = torch.Generator(device=device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        return generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = self.penalties.apply(input_ids, scores.float())
        chosen = logits.argmax(dim=-1)
        if self.sampled_rows:
            chosen[self._sampled_index] = self._sample(logits[self._sampled_index])
        picked = torch.full_like(logits, float("-inf"))
        picked.scatter_(1, chosen.unsqueeze(1), 0.0)
        return picked  # type: ignore[return-value]

    def _sample(self, logits: torch.Tensor) -> torch.Tensor:
        """One token for each row of ``logits``: the sampled rows, in ``sampled_rows`` order."""
        logits = top_k_top_p(logits / self._temperature, self._top_k, self._top_p)
        probs = torch.softmax(logits, dim=-1)
        noise = torch.empty_like(probs)
        for index, generator in enumerate(self.generators):
            noise[index].exponential_(generator=generator)
        return (probs / noise).argmax(dim=-1)


class TokenPenalties:
    """Per-row presence, frequency and repetition penalties, batch-wide.

    Args:
        settings: One entry per batch row.
        prompt_lengths: Unpadded prompt length of each row (rows are left-padded).
        padded_length: Length of the padded prompt block; tokens after it were generated.
        device: Where the logits live.
    """

    def __init__(self, settings: Sequence[ResolvedSampling], prompt_lengths: Sequence[int],
                 padded_length: int, device: torch.device) -> None:
        def column(values: Sequence[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device).unsqueeze(1)

        self.presence = column([s.presence_penalty for s in settings])
        self.frequency = column([s.frequency_penalty for s in settings])
        self.repetition = column([s.repetition_penalty for s in settings])
        self.output_penalties = any(s.presence_penalty or s.frequency_penalty for s in settings)
        self.repetition_penalties = any(s.repetition_penalty != 1.0 for s in settings)
        self.prompt_lengths = list(prompt_lengths)
        self.padded_length = padded_length
        self._tally: _TokenTally | None = None  # started at the first step, when the vocabulary is known

    def apply(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (float, one row per batch row) penalised for what ``input_ids`` holds."""
        if not (self.output_penalties or self.repetition_penalties):
            return logits
        if self._tally is None:
            self._tally = _TokenTally.start(input_ids, self.prompt_lengths, self.padded_length, logits.shape[1])
        tally = self._tally
        tally.add(input_ids)
        if self.repetition_penalties:
            penalised = torch.where(logits > 0, logits / self.repetition, logits * self.repetition)
            logits = torch.where(tally.seen, penalised, logits)
        if self.output_penalties:
            generated = tally.generated
            logits = logits - self.frequency * generated - self.presence * (generated > 0).to(logits.dtype)
        return logits


@dataclass
class _TokenTally:
    """What each row has produced so far, grown by the tokens added since the previous step.

    Attributes:
        generated: ``[rows, vocabulary]`` how often each row generated each token (output only).
        seen: ``[rows, vocabulary]`` whether each token is in the row's prompt or output.
        counted: Input positions already tallied.
    """

    generated: torch.Tensor
    seen: torch.Tensor
    counted: int

    @classmethod
    def start(cls, input_ids: torch.Tensor, prompt_lengths: Sequence[int], padded_length: int,
              vocabulary: int) -> _TokenTally:
        """A tally holding each row's prompt, without its left padding."""
        rows, device = input_ids.shape[0], input_ids.device
        prompt = input_ids[:, :padded_length]
        columns = torch.arange(padded_length, device=device).unsqueeze(0)
        real = columns >= padded_length - torch.tensor(list(prompt_lengths), device=device).unsqueeze(1)
        # A plain scatter of True could let a padding position holding the same token win.
        hits = torch.zeros(rows, vocabulary, dtype=torch.int32, device=device)
        hits.scatter_add_(1, prompt, real.to(torch.int32))
        return cls(torch.zeros(rows, vocabulary, device=device), hits > 0, padded_length)

    def add(self, input_ids: torch.Tensor) -> None:
        new = input_ids[:, self.counted:]
        self.counted = input_ids.shape[1]
        if new.numel():
            self.generated.scatter_add_(1, new, torch.ones_like(new, dtype=self.generated.dtype))
            self.seen.scatter_(1, new, True)


def top_k_top_p(logits: torch.Tensor, top_k: Sequence[int], top_p: Sequence[float]) -> torch.Tensor:
    """Mask (to ``-inf``) what each row's top-k, then top-p (nucleus), leaves out.

    A row keeps its ``top_k`` most likely tokens (ties with the k-th included; 0 or at least
    the vocabulary keeps all), then the smallest set of those whose probability mass reaches
    its ``top_p``.
    """
    vocabulary = logits.shape[1]
    ks = [k if 0 < k < vocabulary else vocabulary for k in top_k]
    if all(k == vocabulary for k in ks) and all(p >= 1.0 for p in top_p):
        return logits
    ordered, order = torch.sort(logits, dim=-1, descending=True)
    kth = ordered.gather(1, torch.tensor(ks, device=logits.device).unsqueeze(1) - 1)
    ordered = ordered.masked_fill(ordered < kth, float("-inf"))
    probs = torch.softmax(ordered, dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    nucleus = torch.tensor(list(top_p), device=logits.device).unsqueeze(1)
    ordered = ordered.masked_fill((mass_before >= nucleus) & (nucleus < 1.0), float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(1, order, ordered)
