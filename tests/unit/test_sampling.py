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
    (SamplingParams(seed=2**63), "seed"),
])
def test_out_of_range_values_name_the_parameter(params: SamplingParams, name: str) -> None:
    with pytest.raises(InvalidRequestError, match=name) as caught:
        resolve_sampling(params, MODEL_CARD_DEFAULTS)
    assert caught.value.param == name


def test_a_seeded_row_draws_the_same_tokens_whatever_shares_its_batch() -> None:
    seeded = ResolvedSampling(1.0, 0.9, 5, 0.0, 0.0, 1.0, seed=7)
    neighbours = [GREEDY, ResolvedSampling(1.3, 1.0, 0, 0.5, 0.0, 1.0), ResolvedSampling(0.8, 0.5, 3, 0.0, 0.0, 1.0)]
    logits = torch.linspace(-1.0, 1.0, 12)

    def picks(settings: list[ResolvedSampling], row: int) -> list[int]:
        sampler = RowSampler(settings, [2] * len(settings), 2, "cpu")
        ids = torch.zeros(len(settings), 2, dtype=torch.long)
        chosen = []
        for _ in range(8):  # eight steps, each feeding the chosen tokens back
            out = sampler(ids, logits.repeat(len(settings), 1)).argmax(dim=1)
            ids = torch.cat([ids, out.unsqueeze(1)], dim=1)
            chosen.append(int(out[row]))
        return chosen

    alone = picks([seeded], 0)
    assert picks([*neighbours[:2], seeded, neighbours[2]], 2) == alone
    assert picks([seeded, seeded], 1) == alone
    assert len(set(alone)) > 1, "eight draws from a flat distribution over five tokens vary"


def test_rows_in_one_batch_keep_their_own_top_k() -> None:
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]] * 2)
    narrow, wide = ResolvedSampling(5.0, 1.0, 1, 0.0, 0.0, 1.0), ResolvedSampling(5.0, 1.0, 3, 0.0, 0.0, 1.0)
    sampler = RowSampler([narrow, wide], [1, 1], 1, "cpu")
    draws = [sampler(torch.zeros(2, 1, dtype=torch.long), logits).argmax(dim=1).tolist() for _ in range(200)]
    assert {row[0] for row in draws} == {0}
    assert {row[1] for row in draws} == {0, 1, 2}


def test_sampling_follows_the_softmax_distribution() -> None:
    plain = ResolvedSampling(1.0, 1.0, 0, 0.0, 0.0, 1.0, seed=123)
    sampler = RowSampler([plain], [1], 1, "cpu")
    logits = torch.log(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))  # probabilities 0.1, 0.2, 0.3, 0.4
    counts = torch.zeros(4)
    for _ in range(4000):
        counts[sampler(torch.zeros(1, 1, dtype=torch.long), logits).argmax()] += 1
    assert torch.allclose(counts / counts.sum(), torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.025)


def test_penalties_counted_step_by_step_equal_a_recount() -> None:
    penalised = ResolvedSampling(0.0, 1.0, 0, 0.4, 0.3, 1.3)
    prompt = [[0, 3, 1], [2, 2, 4]]  # row 0 is left-padded (prompt length 2), row 1 is not
    generated = [[1, 1, 4, 0], [3, 4, 4, 4]]
    logits = torch.tensor([[0.5, 1.0, -0.5, 2.0, 0.8]] * 2)
    stepping = RowSampler([penalised] * 2, [2, 3], 3, "cpu")
    for step in range(len(generated[0]) + 1):
        ids = torch.tensor([p + g[:step] for p, g in zip(prompt, generated, strict=True)])
        fresh = RowSampler([penalised] * 2, [2, 3], 3, "cpu")
        assert torch.equal(stepping.penalties.apply(ids, logits), fresh.penalties.apply(ids, logits))
    expected = []
    for row, real_prompt in enumerate([prompt[0][1:], prompt[1]]):  # the reference, token by token
        values = []
        for token, value in enumerate(logits[row].tolist()):
            if token in real_prompt or token in generated[row]:
                value = value / 1.3 if value > 0 else value * 1.3
            count = generated[row].count(token)
            values.append(value - 0.3 * count - (0.4 if count else 0.0))
        expected.append(values)
    final = torch.tensor([p + g for p, g in zip(prompt, generated, strict=True)])
    assert torch.allclose(stepping.penalties.apply(final, logits), torch.tensor(expected))
