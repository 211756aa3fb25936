"""Wire requests to the service's :class:`~seesay.types.Question`: a field-by-field mapping.

Nothing is decoded or checked against the server's limits here: the service does that after
it admitted the request (:mod:`seesay.intake`). Each picture keeps the name of the field it
came in, so errors about it name that field.
"""

from __future__ import annotations

from seesay.api.protocol import ChatCompletionRequest, ChatMessageIn, ImageContent, VqaForm
from seesay.types import ImageInput, PixelRequest, Question, SamplingParams, Turn


def chat_question(body: ChatCompletionRequest, request_id: str) -> Question:
    """The question a chat completion asks."""
    sampling = SamplingParams(
        max_new_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        repetition_penalty=body.repetition_penalty,
        seed=body.seed,
        stop=body.stop_strings,
    )
    options = body.seesay
    pixels = None if options is None else PixelRequest(options.min_pixels, options.max_pixels, "seesay.")
    turns = tuple(_turn(message, index) for index, message in enumerate(body.messages))
    return Question(turns, sampling, pixels, body.model, request_id)


def vqa_question(form: VqaForm, image: bytes, request_id: str) -> Question:
    """The question of a ``/v1/vqa`` upload, whose picture's bytes are ``image``."""
    sampling = SamplingParams(
        max_new_tokens=form.max_tokens,
        temperature=form.temperature,
        top_p=form.top_p,
        top_k=form.top_k,
        presence_penalty=form.presence_penalty,
        frequency_penalty=form.frequency_penalty,
        seed=form.seed,
    )
    turn = Turn("user", (ImageInput(image, "image"), form.question))
    return Question((turn,), sampling, PixelRequest(form.min_pixels, form.max_pixels), form.model, request_id)


def _turn(message: ChatMessageIn, index: int) -> Turn:
    role = "system" if message.role == "developer" else message.role
    if isinstance(message.content, str):
        return Turn(role, (message.content,))
    parts = tuple(
        ImageInput(part.image_url.url, f"messages[{index}].content[{number}].image_url")
        if isinstance(part, ImageContent) else part.text
        for number, part in enumerate(message.content)
    )
    return Turn(role, parts)
