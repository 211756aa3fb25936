"""The demo model's small byte-level BPE tokenizer with Qwen's special tokens and chat format.

Contract: :func:`build_tokenizer` trains a byte-level BPE (so any text encodes, nothing is
unknown) on the catalogue's questions and answers, appends the Qwen special tokens with
their real strings in Qwen's order (:data:`SPECIAL_TOKENS`), and wraps it as a transformers
fast tokenizer that ``AutoTokenizer`` reloads: eos ``<|im_end|>``, pad ``<|endoftext|>``, and
the Qwen chat template (:data:`CHAT_TEMPLATE`). The same corpus always gives the same
tokenizer. The full Qwen vocabulary (151,643 tokens) is far too slow to train from scratch
on a CPU, hence a vocabulary of under a thousand tokens.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from seesay.demo.catalogue import corpus

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
VISION_START_TOKEN = "<|vision_start|>"
VISION_END_TOKEN = "<|vision_end|>"

# Qwen's chat format. Newlines are string literals so Jinja's whitespace control cannot eat them.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] in ('image', 'image_url') -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}"
    "{{- part['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

DEFAULT_VOCAB_SIZE = 1000


def train_bpe(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> Tokenizer:
    """A byte-level BPE over ``texts`` with at most ``vocab_size`` tokens, no special tokens."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(texts, trainer)
    return bpe


def build_tokenizer(texts: Iterable[str] | None = None,
                    vocab_size: int = DEFAULT_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """The demo tokenizer (see the module docstring).

    Args:
        texts: Training text; defaults to the catalogue's questions and answers.
        vocab_size: Upper bound on the BPE vocabulary, special tokens not included.

    Returns:
        A fast tokenizer with the Qwen special tokens after the BPE vocabulary.
    """
    bpe = train_bpe(corpus() if texts is None else texts, vocab_size)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, chat_template=CHAT_TEMPLATE,
                                        padding_side="left", clean_up_tokenization_spaces=False)
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    # Only now do the strings have ids; naming them in the constructor would map them wrongly.
    tokenizer.eos_token = EOS_TOKEN
    tokenizer.pad_token = PAD_TOKEN
    return tokenizer
