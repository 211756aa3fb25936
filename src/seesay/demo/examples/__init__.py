"""Example pictures bundled with seesay, for the README and ``seesay ask example:NAME``.

Contract: :func:`example_path` gives the path of a bundled PNG by name (``red-tshirt``) and
raises ``ValueError`` listing the names for an unknown one. The pictures are catalogue
items drawn by :func:`seesay.demo.catalogue.draw_picture` with a seed derived from the name;
:func:`write_examples` draws them again, identically.
"""

from __future__ import annotations

import random
from importlib import resources
from pathlib import Path

# Bundled examples: name → (kind key, colour key).
EXAMPLES: dict[str, tuple[str, str]] = {
    "red-tshirt": ("tshirt", "red"),
    "blue-jacket": ("jacket", "blue"),
    "black-shoes": ("shoes", "black"),
    "pink-dress": ("dress", "pink"),
    "green-bag": ("bag", "green"),
    "yellow-hat": ("hat", "yellow"),
}


def examples_dir() -> Path:
    """The folder holding the bundled pictures."""
    return Path(str(resources.files(__name__)))


def example_path(name: str) -> Path:
    """Path of the bundled picture ``name`` (e.g. ``red-tshirt``).

    Raises:
        ValueError: ``name`` is not a bundled example; the message lists the names.
    """
    if name not in EXAMPLES:
        raise ValueError(f"no example picture named '{name}'; choose one of: {', '.join(sorted(EXAMPLES))}")
    return examples_dir() / f"{name}.png"


def write_examples(out_dir: str | Path | None = None) -> list[Path]:
    """Draw every example picture into ``out_dir`` (default: the bundled folder); return the paths."""
    from seesay.demo.catalogue import COLOURS_BY_KEY, KINDS_BY_KEY, Item, draw_picture, png_bytes

    out = Path(out_dir) if out_dir is not None else examples_dir()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (kind, colour) in EXAMPLES.items():
        item = Item(KINDS_BY_KEY[kind], COLOURS_BY_KEY[colour])
        picture = draw_picture(item, random.Random(f"example:{name}"))
        path = out / f"{name}.png"
        path.write_bytes(png_bytes(picture))
        paths.append(path)
    return paths
