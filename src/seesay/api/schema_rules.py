"""The wire schemas' rules as JSON Schema: what the validators check, said in the OpenAPI document.

Contract: each function here is a pydantic ``json_schema_extra`` hook of one model in
:mod:`seesay.api.protocol`, rewriting that model's JSON schema so it refuses what the model's
validators refuse (a blank user turn, images outside user turns, ``n`` other than 1 …), and
the patterns are written so that every regex dialect reads them alike (JSON Schema patterns
have no flags, and ECMA, Python and Rust disagree on ``\\s``). ``tests/unit/test_openapi.py``
fuzzes the app against the document these make.
"""

from __future__ import annotations

import copy
import re
from typing import Any

# The characters ``str.strip()`` removes, spelled out so the document's pattern means the same in
# every regex dialect (ECMA, Python and Rust disagree on ``\s``); test_openapi checks the equivalence.
BLANK_CHARACTERS = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK = f"[^{BLANK_CHARACTERS}]"
"""A pattern that finds a character in a text that is not blank: a user's text must have one."""
_NOT_BLANK = re.compile(NOT_BLANK)


def is_blank(text: str) -> bool:
    """Whether ``text`` is empty or only white space (as ``not text.strip()``)."""
    return _NOT_BLANK.search(text) is None


_EMPTY_FIELD = {"const": "", "description": "An empty field is a field left out (as HTML forms send them)."}


def _form_field(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional form field's schema: its value, or an empty field, never ``null`` (a form has none)."""
    branches = [branch for branch in schema.get("anyOf", ()) if branch != {"type": "null"}]
    if len(branches) != 1:
        return schema
    return {**{key: value for key, value in schema.items() if key not in ("anyOf", "default")},
            "anyOf": [branches[0], _EMPTY_FIELD]}


def _caseless(word: str) -> str:
    """A pattern matching ``word`` in any case (JSON Schema patterns have no flags)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


_BLANKS = f"[{BLANK_CHARACTERS}]*"
DATA_URL_PATTERN = (f"^{_caseless('data')}:{_BLANKS}{_caseless('image')}/[^,;]*(;[^,;]*)*;"
                    f"{_BLANKS}{_caseless('base64')}{_BLANKS}(;[^,;]*)*,")
"""The start of an image data URL as the server reads it: ``data:image/<type>[;...];base64,`` (any case)."""
HTTP_URL_PATTERN = f"^{_caseless('http')}[Ss]?:"
IMAGE_URL_PATTERN = f"({DATA_URL_PATTERN})|({HTTP_URL_PATTERN})"
"""``image_url.url`` on a server that fetches http(s) URLs; one that does not documents :data:`DATA_URL_PATTERN`."""


def message_variants(schema: dict[str, Any]) -> None:
    """ChatMessageIn's JSON schema as two variants, so the document says what the validators check.

    A user turn's content needs a character that is not blank, or an image; only a user turn
    may hold images. The refs to the content parts are reused, so pydantic still resolves them.
    """
    properties = schema.pop("properties")
    string_content, list_content = properties["content"]["oneOf"]
    parts = list_content["items"]
    mapping = parts["discriminator"]["mapping"]
    text_ref, image_ref = (next(part for part in parts["oneOf"] if part["$ref"] == mapping[tag])
                           for tag in ("text", "image_url"))
    user_text = {"type": "string", "pattern": NOT_BLANK}
    contentful_part = {"anyOf": [copy.deepcopy(image_ref), {
        "type": "object", "properties": {"type": {"const": "text"}, "text": user_text}, "required": ["type", "text"]}]}
    user_content = {"oneOf": [{**string_content, **user_text},
                              {**list_content, "contains": contentful_part}]}
    other_content = {"oneOf": [string_content, {"type": "array", "items": copy.deepcopy(text_ref)}]}
    common = {"type": "object", "additionalProperties": False, "required": schema.pop("required")}
    del schema["additionalProperties"], schema["type"]
    schema["oneOf"] = [
        {**common, "title": "UserMessage",
         "properties": {**properties, "role": {"const": "user"}, "content": user_content}},
        {**copy.deepcopy(common), "title": "SystemOrAssistantMessage",
         "properties": {**copy.deepcopy(properties), "role": {"enum": ["system", "developer", "assistant"]},
                        "content": other_content}},
    ]


def request_rules(schema: dict[str, Any]) -> None:
    """The request rules of the validators below, in JSON Schema where it can say them."""
    properties = schema["properties"]
    properties["n"] = {"const": 1, "default": 1, "title": "N", "description": "Must be 1."}
    properties["logprobs"] = {"anyOf": [{"const": False}, {"type": "null"}], "default": None, "title": "Logprobs",
                              "description": "Not supported: false or null."}
    properties["stop"]["anyOf"][0]["oneOf"][1]["maxItems"] = 4
    # stream_options (not null) needs stream: true.
    schema["anyOf"] = [
        {"not": {"required": ["stream_options"]}},
        {"properties": {"stream_options": {"type": "null"}}},
        {"properties": {"stream": {"const": True}}, "required": ["stream"]},
    ]


IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff")
"""The picture formats every install reads (HEIC and AVIF need the ``heif`` extra)."""


def form_fields(schema: dict[str, Any]) -> None:
    """VqaForm's JSON schema as a multipart form has it: no ``null`` but an empty field, and a file part."""
    properties = schema["properties"]
    for name, field in properties.items():
        properties[name] = _form_field(field)
    properties["image"] = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream",
                           "title": "Image", "description": "The picture's file: " + ", ".join(IMAGE_MEDIA_TYPES)
                           + " (HEIC/AVIF with the heif extra); anything else is a 400."}
