"""RowSampler: per-row sampling inside one batch, OpenAI penalty semantics, defaults."""

from __future__ import annotations

import pytest
import torch

from seesay.engine.sampling import MODEL_CARD_DEFAULTS, ResolvedSampling, RowSampler, model_defaults, resolve_sampling
from seesay.errors import InvalidRequestError
from seesay.types import SamplingParams

GREEDY = ResolvedSampling(0.0, 1.0, 0, 0.0, 0.0, 1.0)


def choose(settings: list[ResolvedSampling], ids: list[list[int]], logits: list[list[float]],
           padded: int = 2) -> list[int]:
    sampler = RowSampler(settings, [padded] * len(settings), padded, "cpu")
    out = sampler(torch.tensor(ids), torch.tensor(logits))
    assert torch.isfinite(out).sum(dim=1).tolist() == [1] * len(settings), "exactly one token stays finite"
    return out.argmax(dim=1).tolist()


def test_greedy_takes_the_argmax() -> None:
    assert choose([GREEDY], [[0, 1]], [[0.1, 2.0, 0.5, 1.9]]) == [1]


def test_presence_penalty_applies_only_to_generated_tokens() -> None:
    penalised = ResolvedSampling(0.0, 1.0, 0, 1.5, 0.0, 1.0)
    # Token 1 is in the prompt only: no penalty, it stays the argmax.
    assert choose([penalised], [[1, 1]], [[0.0, 2.0, 1.0]]) == [1]
    # Token 1 was generated (after the 2-token prompt): 2.0 - 1.5 < 1.0.
    assert choose([penalised], [[0, 0, 1]], [[0.0, 2.0, 1.0]]) == [2]


def test_frequency_penalty_scales_with_count() -> None:
    frequency = ResolvedSampling(0.0, 1.0, 0, 0.0, 0.6, 1.0)
    assert choose([frequency], [[0, 0, 1]], [[0.0, 2.0, 1.3]]) == [1]  # 2.0 - 0.6 > 1.3
    assert choose([frequency], [[0, 0, 1, 1]], [[0.0, 2.0, 1.3]]) == [2]  # 2.0 - 1.2 < 1.3


def test_repetition_penalty_ignores_left_padding() -> None:
    repetition = ResolvedSampling(0.0, 1.0, 0, 0.0, 0.0, 4.0)
    sampler = RowSampler([repetition], prompt_lengths=[1], padded_length=2, device="cpu")
    # Row is [pad=0, 2]: token 0 is padding, so it is not penalised; token 2 is.
    out = sampler(torch.tensor([[0, 2]]), torch.tensor([[3.0, 0.0, 3.5]]))
    assert out.argmax(dim=1).tolist() == [0]


def test_rows_use_their_own_settings() -> None:
    penalised = ResolvedSampling(0.0, 1.0, 0, 2.0, 0.0, 1.0)
    assert choose([GREEDY, penalised], [[0, 0, 1], [0, 0, 1]], [[0.0, 2.0, 1.0], [0.0, 2.0, 1.0]]) == [1, 2]


def test_top_k_one_is_greedy_even_when_sampling() -> None:
    hot = ResolvedSampling(2.0, 1.0, 1, 0.0, 0.0, 1.0, seed=0)
    assert {choose([hot], [[0, 0]], [[0.0, 1.0, 0.9, 0.8]])[0] for _ in range(20)} == {1}


def test_top_p_keeps_only_the_nucleus() -> None:
    nucleus = ResolvedSampling(1.0, 0.5, 0, 0.0, 0.0, 1.0)
    logits = [[5.0, 4.9, -5.0, -5.0]]  # tokens 0 and 1 hold almost all the mass, 0 alone ~52 %
    picks = {choose([nucleus], [[0, 0]], logits)[0] for _ in range(30)}
    assert picks == {0}


def test_seed_makes_sampling_reproducible() -> None:
    seeded = ResolvedSampling(1.0, 1.0, 0, 0.0, 0.0, 1.0, seed=42)
    logits = [[0.0] * 50]
    draws = [choose([seeded], [[0, 0]], logits)[0] for _ in range(3)]
    assert len(set(draws)) == 1
    unseeded = ResolvedSampling(1.0, 1.0, 0, 0.0, 0.0, 1.0)
    assert len({choose([unseeded], [[0, 0]], logits)[0] for _ in range(20)}) > 1


def test_defaults_come_from_the_model_card_then_the_checkpoint() -> None:
    resolved = resolve_sampling(SamplingParams(), MODEL_CARD_DEFAULTS)
    assert (resolved.temperature, resolved.top_p, resolved.top_k, resolved.presence_penalty) == (0.7, 0.8, 20, 1.5)
    checkpoint = model_defaults({"temperature": 0.3, "top_k": 5, "top_p": None})
    assert (checkpoint.temperature, checkpoint.top_k, checkpoint.top_p) == (0.3, 5, 0.8)
    assert resolve_sampling(SamplingParams(temperature=0.0), checkpoint).greedy


@pytest.mark.parametrize(("params", "name"), [
    (SamplingParams(temperature=-1), "temperature"),
    (SamplingParams(top_p=0), "top_p"),
    (SamplingParams(presence_penalty=3), "presence_penalty"),
    (SamplingParams(frequency_penalty=-2.5), "frequency_penalty"),
    (SamplingParams(top_k=-1), "top_k"),
])
def test_out_of_range_values_name_the_parameter(params: SamplingParams, name: str) -> None:
    with pytest.raises(InvalidRequestError, match=name) as caught:
        resolve_sampling(params, MODEL_CARD_DEFAULTS)
    assert caught.value.param == name
