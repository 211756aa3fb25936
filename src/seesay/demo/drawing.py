"""Procedural product pictures for the demo catalogue, drawn with Pillow.

Contract: :func:`draw_item` turns an item kind, an RGB colour and a ``random.Random`` into a
256×256 RGB picture, using only that generator for randomness, so a seed fixes the picture.
Each kind is a list of shapes in unit coordinates (the item fits in [-1, 1]², y pointing
down) painted in *tones* of the item's colour; the whole item is then scaled, rotated a
little, mirrored and moved onto a pale background (solid, gradient or noisy). Kinds differ
in the details a shopper would use: a jacket has long sleeves, a collar and a zip, a T-shirt
short sleeves and a round neck.

The catalogue (names, colours, questions, answers) lives in :mod:`seesay.demo.catalogue`.
"""

from __future__ import annotations

import colorsys
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 256
Point = tuple[float, float]
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Shape:
    """One filled polygon (``width == 0``) or polyline (``width`` in unit coordinates).

    Attributes:
        points: Vertices in the item's unit coordinates.
        tone: How to colour it: ``base``, ``dark``, ``light``, ``outline``, ``metal`` or ``sole``.
        width: Line width in units; 0 fills the polygon.
    """

    points: tuple[Point, ...]
    tone: str = "base"
    width: float = 0.0


def _poly(points: Sequence[Point], tone: str = "base") -> Shape:
    return Shape(tuple(points), tone)


def _line(points: Sequence[Point], tone: str, width: float) -> Shape:
    return Shape(tuple(points), tone, width)


def _ellipse(cx: float, cy: float, rx: float, ry: float, tone: str = "base", start: float = 0.0,
             end: float = 360.0, steps: int = 28) -> list[Point]:
    """Points on an ellipse arc (degrees, clockwise from +x since y points down)."""
    angles = [math.radians(start + (end - start) * i / steps) for i in range(steps + 1)]
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


def _tshirt(rng: random.Random) -> list[Shape]:
    w = rng.uniform(0.5, 0.6)
    tip = rng.uniform(0.9, 1.0)
    neck = _ellipse(0, -0.78, 0.2, rng.uniform(0.14, 0.2), start=180, end=0, steps=10)
    body = [(-w, -0.66), (-tip, -0.3), (-tip + 0.24, -0.08), (-w, -0.3), (-w, 0.86),
            (w, 0.86), (w, -0.3), (tip - 0.24, -0.08), (tip, -0.3), (w, -0.66), *neck[::-1]]
    shapes = [_poly(body), _poly([(w * 0.45, -0.5), (w, -0.5), (w, 0.86), (w * 0.45, 0.86)], "dark"),
              _line(neck, "dark", 0.06),
              _line([(-tip, -0.3), (-tip + 0.24, -0.08)], "dark", 0.05),
              _line([(tip, -0.3), (tip - 0.24, -0.08)], "dark", 0.05),
              _line([(-w, 0.8), (w, 0.8)], "dark", 0.03)]
    if rng.random() < 0.5:
        shapes.append(_poly(_ellipse(0, -0.1, 0.2, 0.2), "light"))
    return shapes


def _jacket(rng: random.Random) -> list[Shape]:
    w = rng.uniform(0.52, 0.6)
    cuff = rng.uniform(0.68, 0.8)
    shapes = []
    for side in (-1, 1):
        sleeve = [(side * w, -0.7), (side * (w + 0.3), -0.55), (side * 0.99, cuff),
                  (side * 0.74, cuff + 0.04), (side * (w + 0.02), -0.15)]
        shapes += [_poly(sleeve), _line([(side * 0.99, cuff - 0.1), (side * 0.74, cuff - 0.06)], "dark", 0.1)]
    body = [(-0.22, -0.84), (-w, -0.7), (-w, 0.86), (w, 0.86), (w, -0.7), (0.22, -0.84), (0, -0.62)]
    shapes += [_poly(body), _poly([(w * 0.5, -0.6), (w, -0.6), (w, 0.86), (w * 0.5, 0.86)], "dark")]
    for side in (-1, 1):
        lapel = [(side * 0.22, -0.84), (side * 0.34, -0.68), (side * 0.1, -0.3), (0, -0.62)]
        shapes += [_poly(lapel, "dark"),
                   _line([(side * 0.42, 0.3), (side * 0.28, 0.5)], "outline", 0.04)]
    shapes += [_line([(-w, 0.78), (w, 0.78)], "dark", 0.1)]
    if rng.random() < 0.6:
        shapes.append(_line([(0, -0.5), (0, 0.86)], "metal", 0.05))
    else:
        shapes += [_poly(_ellipse(0.05, y, 0.045, 0.045), "metal") for y in (-0.25, 0.05, 0.35, 0.65)]
    return shapes


def _dress(rng: random.Random) -> list[Shape]:
    flare = rng.uniform(0.62, 0.8)
    waist = rng.uniform(-0.15, 0.0)
    top = [(-0.3, -0.68), (-0.12, -0.62), (0, -0.52), (0.12, -0.62), (0.3, -0.68),
           (0.24, waist), (-0.24, waist)]
    hem = [(flare * math.cos(a), 0.88 + 0.04 * math.sin(5 * a)) for a in np.linspace(0.0, math.pi, 12)]
    skirt = [(-0.24, waist), (0.24, waist), *hem]
    shapes = [_line([(-0.26, -0.68), (-0.2, -0.95)], "dark", 0.05),
              _line([(0.26, -0.68), (0.2, -0.95)], "dark", 0.05),
              _poly(top), _poly(skirt), _poly([(0.0, waist), (0.24, waist), *hem[:5]], "dark")]
    shapes += [_line([(x * 0.2, waist + 0.08), (x * flare * 0.8, 0.84)], "dark", 0.025)
               for x in (-1, -0.4, 0.4)]
    shapes.append(_poly([(-0.25, waist - 0.07), (0.25, waist - 0.07), (0.25, waist + 0.05),
                         (-0.25, waist + 0.05)], rng.choice(["outline", "light"])))
    return shapes


def _shoe(dx: float, dy: float, scale: float, tone: str) -> list[Shape]:
    def at(points: Sequence[Point]) -> list[Point]:
        return [(dx + x * scale, dy + y * scale) for x, y in points]

    upper = [(-0.9, 0.2), (-0.92, -0.22), (-0.62, -0.3), (-0.4, -0.12), (-0.15, -0.3),
             (0.35, -0.05), (0.8, 0.04), (0.92, 0.2)]
    sole = [(-0.94, 0.16), (0.95, 0.16), (0.93, 0.34), (-0.92, 0.34)]
    shapes = [_poly(at(sole), "sole"), _poly(at(upper), tone), _line(at(upper), "outline", 0.03),
              _line(at([(-0.94, 0.22), (0.94, 0.22)]), "outline", 0.02)]
    shapes += [_line(at([(x, -0.2 + 0.1 * i), (x + 0.12, -0.14 + 0.1 * i)]), "light", 0.035)
               for i, x in enumerate((-0.18, -0.06, 0.06))]
    return shapes


def _shoes(rng: random.Random) -> list[Shape]:
    gap = rng.uniform(0.4, 0.55)
    return [*_shoe(0.12, -gap, 0.88, "dark"), *_shoe(-0.05, 0.3, 1.0, "base")]


def _bag(rng: random.Random) -> list[Shape]:
    top = rng.uniform(-0.3, -0.1)
    handle = _ellipse(0, top, rng.uniform(0.35, 0.5), rng.uniform(0.55, 0.7), start=180, end=360, steps=16)
    body = [(-0.7, top), (0.7, top), (0.86, 0.86), (-0.86, 0.86)]
    flap_y = top + rng.uniform(0.35, 0.5)
    return [_line(handle, "dark", 0.14), _poly(body),
            _poly([(0.35, top), (0.7, top), (0.86, 0.86), (0.45, 0.86)], "dark"),
            _poly([(-0.72, top), (0.72, top), (0.64, flap_y), (-0.64, flap_y)], "dark"),
            _line([(-0.64, flap_y), (0.64, flap_y)], "outline", 0.03),
            _poly(_ellipse(0, flap_y, 0.09, 0.07), "metal")]


def _hat(rng: random.Random) -> list[Shape]:
    brim_rx = rng.uniform(0.85, 0.98)
    crown_w = rng.uniform(0.42, 0.52)
    dome = _ellipse(0, -0.05, crown_w, rng.uniform(0.5, 0.6), start=180, end=360, steps=14)
    crown = [(-crown_w, 0.32), *dome, (crown_w, 0.32)]
    return [_poly(_ellipse(0, 0.35, brim_rx, 0.24)), _poly(_ellipse(0, 0.42, brim_rx * 0.9, 0.14), "dark"),
            _poly(crown), _poly([(0.15, 0.32), *crown[len(crown) // 2 + 2:]], "dark"),
            _poly([(-crown_w, 0.32), (-crown_w, 0.16), (crown_w, 0.16), (crown_w, 0.32)], "outline")]


SHAPES: dict[str, Callable[[random.Random], list[Shape]]] = {
    "jacket": _jacket, "tshirt": _tshirt, "dress": _dress, "shoes": _shoes, "bag": _bag, "hat": _hat,
}


def _scale_value(rgb: RGB, value_factor: float, saturation_factor: float = 1.0) -> RGB:
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    r, g, b = colorsys.hsv_to_rgb(h, min(1.0, s * saturation_factor), min(1.0, v * value_factor))
    return round(r * 255), round(g * 255), round(b * 255)


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def _tones(rgb: RGB, rng: random.Random) -> dict[str, RGB]:
    """The palette one item is painted with; dark items get lighter details to stay readable."""
    is_dark = max(rgb) < 80
    return {
        "base": rgb,
        "dark": _mix(rgb, (90, 90, 90), 0.25) if is_dark else _scale_value(rgb, rng.uniform(0.72, 0.82)),
        "light": _mix(rgb, (255, 255, 255), rng.uniform(0.25, 0.4)),
        "outline": _mix(rgb, (120, 120, 120), 0.3) if is_dark else _scale_value(rgb, 0.55),
        "metal": (rng.randint(175, 205),) * 3,  # type: ignore[dict-item]
        "sole": (rng.randint(228, 245),) * 3,  # type: ignore[dict-item]
    }


def pale_colour(rng: random.Random) -> RGB:
    """A background tint: saturation at most 0.12 and value at least 0.88, far from every item colour."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.12), rng.uniform(0.88, 1.0))
    return round(r * 255), round(g * 255), round(b * 255)


def _background(rng: random.Random) -> Image.Image:
    style = rng.choice(["solid", "gradient", "noise"])
    first = np.array(pale_colour(rng), dtype=np.float64)
    if style == "solid":
        pixels = np.broadcast_to(first, (CANVAS, CANVAS, 3)).copy()
    elif style == "gradient":
        second = np.array(pale_colour(rng), dtype=np.float64)
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:CANVAS, 0:CANVAS] / (CANVAS - 1) - 0.5
        t = np.clip(xs * math.cos(angle) + ys * math.sin(angle) + 0.5, 0.0, 1.0)[..., None]
        pixels = first * (1 - t) + second * t
    else:
        noise = np.random.default_rng(rng.getrandbits(64)).normal(0.0, rng.uniform(3, 8), (CANVAS, CANVAS, 1))
        pixels = first + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _placement(rng: random.Random) -> Callable[[Point], Point]:
    """A random similarity transform from unit coordinates to canvas pixels (with a mirror)."""
    scale = rng.uniform(74, 104)
    angle = math.radians(rng.uniform(-12, 12))
    mirror = rng.choice([-1.0, 1.0])
    margin = scale * 1.02
    cx, cy = rng.uniform(margin, CANVAS - margin), rng.uniform(margin, CANVAS - margin)
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale

    def place(point: Point) -> Point:
        x, y = point[0] * mirror, point[1]
        return cx + x * cos - y * sin, cy + x * sin + y * cos

    return place


def draw_item(kind: str, rgb: RGB, rng: random.Random) -> Image.Image:
    """Draw one item of ``kind`` in roughly colour ``rgb`` on a pale background.

    Args:
        kind: A key of :data:`SHAPES` (``jacket``, ``tshirt``, ``dress``, ``shoes``, ``bag``, ``hat``).
        rgb: The item's main colour, already varied by the caller.
        rng: The only source of randomness.

    Returns:
        A 256×256 RGB picture.
    """
    image = _background(rng)
    tones = _tones(rgb, rng)
    place = _placement(rng)
    scale = math.dist(place((0, 0)), place((1, 0)))
    pen = ImageDraw.Draw(image)
    for shape in SHAPES[kind](rng):
        points = [place(p) for p in shape.points]
        if shape.width:
            pen.line(points, fill=tones[shape.tone], width=max(1, round(shape.width * scale)), joint="curve")
        else:
            pen.polygon(points, fill=tones[shape.tone])
    return image
