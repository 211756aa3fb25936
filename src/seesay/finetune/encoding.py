"""Dataset conversations as the model reads them at serving time, labelled on the assistant's words.

Contract: :class:`ConversationEncoder` turns a :class:`~seesay.finetune.datasets.Conversation`
into an :class:`~seesay.training.batches.EncodedSequence` the way the engine builds a prompt:
each picture goes through :func:`seesay.images.load_image` at the pixel budget, the turns are
rendered by the processor's own chat template (``<image>`` tags become image parts), and
every image placeholder is expanded to the picture's visual tokens. The prompt of each
assistant turn is exactly what the engine would send for the conversation up to that turn,
and the labels cover each assistant turn's text and its end-of-turn token, nothing else
(loss on assistant tokens only). A sequence over ``max_length`` tokens is refused with the
record's name, never cut.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from seesay.errors import SeesayError
from seesay.finetune.datasets import Conversation, DatasetError
from seesay.images import PixelBudget, load_image_file
from seesay.training.batches import IGNORE_INDEX, EncodedSequence, PictureStore, PixelCodec, TrainingSet
from seesay.types import ChatMessage, ImagePart


class ConversationEncoder:
    """Encodes conversations for one processor, pixel budget and length limit.

    Args:
        processor: The model's processor (a ``ProcessorMixin``: tokenizer, image processor, chat template).
        budget: The pixel budget every picture is fitted to.
        max_length: The longest sequence accepted, in tokens.
    """

    def __init__(self, processor: Any, budget: PixelBudget, max_length: int) -> None:
        self.processor = processor
        self.budget = budget
        self.max_length = max_length
        self.tokenizer = self.processor.tokenizer
        self.image_token = str(self.processor.image_token)
        self.image_token_id = int(self.processor.image_token_id)
        self.merge = int(self.processor.image_processor.merge_size)
        if not self.tokenizer.eos_token:
            raise ValueError("the tokenizer has no end-of-turn (eos) token to teach")

    def encode_all(self, conversations: Iterable[Conversation], source: Path) -> TrainingSet:
        """Every conversation encoded into one training set.

        Raises:
            DatasetError: Listing every record that cannot be encoded (pictures that do not
                decode, sequences over ``max_length``), so none trains.
        """
        data = TrainingSet(PictureStore(PixelCodec.of(self.processor.image_processor)), [])
        problems = []
        for conversation in conversations:
            try:
                data.sequences.append(self.encode(conversation, data.pictures))
            except (ValueError, SeesayError) as exc:
                problems.append(f"{conversation.where}: {getattr(exc, 'message', exc)}")
        if problems:
            raise DatasetError(source, problems)
        return data

    def encode(self, conversation: Conversation, pictures: PictureStore) -> EncodedSequence:
        """One conversation; its pictures are added to ``pictures`` (see the module docstring).

        Raises:
            InvalidImageError: A picture does not decode.
            ValueError: The sequence is over ``max_length``.
        """
        messages = conversation.chat_messages(lambda path: load_image_file(path, self.budget))
        images = [part.image.image for message in messages for part in message.content
                  if isinstance(part, ImagePart)]
        counts: list[int] = []
        indices: tuple[int, ...] = ()
        if images:
            encoded = self.processor.image_processor(images=images, do_resize=False)
            grids = np.asarray(encoded["image_grid_thw"])
            pixel_values = np.asarray(encoded["pixel_values"])
            bounds = np.cumsum([0, *(int(grid.prod()) for grid in grids)])
            indices = tuple(pictures.add(pixel_values[start:end], grid.tolist())
                            for start, end, grid in zip(bounds[:-1], bounds[1:], grids, strict=True))
            counts = [int(grid.prod()) // self.merge**2 for grid in grids]
        input_ids: list[int] = []
        labels: list[int] = []
        for text, learned in self._segments(messages):
            ids = self.tokenizer.encode(self._expand(text, counts), add_special_tokens=False)
            input_ids += ids
            labels += ids if learned else [IGNORE_INDEX] * len(ids)
        if len(input_ids) > self.max_length:
            raise ValueError(f"{len(input_ids)} tokens, over the limit of {self.max_length}: shorten it, "
                             "lower the pixel budget, or raise --max-length")
        types = [int(token == self.image_token_id) for token in input_ids]
        return EncodedSequence(input_ids, labels, types, indices)

    def _render(self, messages: list[ChatMessage], generation_prompt: bool) -> str:
        return str(self.processor.apply_chat_template([m.as_template() for m in messages],
                                                      add_generation_prompt=generation_prompt, tokenize=False))

    def _segments(self, messages: list[ChatMessage]) -> list[tuple[str, bool]]:
        """The rendered conversation cut into (text, learned) pieces: learned = an assistant answer."""
        full = self._render(messages, False)
        segments: list[tuple[str, bool]] = []
        cursor = 0
        eos = str(self.tokenizer.eos_token)
        for turn, message in enumerate(messages):
            if message.role != "assistant":
                continue
            prompt = self._render(messages[:turn], True)
            answered = self._render(messages[: turn + 1], False)
            if not (answered.startswith(prompt) and full.startswith(answered)):
                raise ValueError("the chat template does not render this conversation as a prefix of itself; "
                                 "seesay cannot find the assistant's words in it")
            end = answered.find(eos, len(prompt))
            end = len(answered) if end < 0 else end + len(eos)
            segments += [(full[cursor:len(prompt)], False), (full[len(prompt):end], True)]
            cursor = end
        segments.append((full[cursor:], False))
        return [(text, learned) for text, learned in segments if text]

    def _expand(self, text: str, counts: list[int]) -> str:
        """``text`` with each image placeholder repeated as many times as its picture has visual tokens."""
        pieces = re.split(f"({re.escape(self.image_token)})", text)
        expanded = []
        for piece in pieces:
            if piece == self.image_token:
                expanded.append(self.image_token * counts.pop(0))
            else:
                expanded.append(piece)
        return "".join(expanded)
