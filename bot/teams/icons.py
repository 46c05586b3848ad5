"""The Teams app icons, drawn in Python (no image library, no network): a chat bubble with three dots.

Teams wants a full-colour 192×192 icon and a 32×32 outline icon that is white on a transparent background.
Edges are sampled 4×4 per pixel for smoothness and written as RGBA PNGs with :mod:`zlib`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

ACCENT = (0x46, 0x4E, 0xB8)  # Teams-friendly indigo
WHITE = (0xFF, 0xFF, 0xFF)
_SAMPLES = 4

Shape = Callable[[float, float], bool]  # (x, y) in 0..1 → inside?


def png(width: int, height: int, pixels: list[list[tuple[int, int, int, int]]]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(v for px in row for v in px) for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def rounded_rect(x0: float, y0: float, x1: float, y1: float, r: float) -> Shape:
    def inside(x: float, y: float) -> bool:
        if not (x0 <= x <= x1 and y0 <= y <= y1):
            return False
        cx = min(max(x, x0 + r), x1 - r)
        cy = min(max(y, y0 + r), y1 - r)
        return (x - cx) ** 2 + (y - cy) ** 2 <= r * r

    return inside


def triangle(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float]) -> Shape:
    def sign(p: tuple[float, float], q: tuple[float, float], s: tuple[float, float]) -> float:
        return (p[0] - s[0]) * (q[1] - s[1]) - (q[0] - s[0]) * (p[1] - s[1])

    def inside(x: float, y: float) -> bool:
        p = (x, y)
        d1, d2, d3 = sign(p, a, b), sign(p, b, c), sign(p, c, a)
        return not ((d1 < 0 or d2 < 0 or d3 < 0) and (d1 > 0 or d2 > 0 or d3 > 0))

    return inside


def circle(cx: float, cy: float, r: float) -> Shape:
    return lambda x, y: (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def union(*shapes: Shape) -> Shape:
    return lambda x, y: any(s(x, y) for s in shapes)


def _bubble(margin: float) -> Shape:
    """A speech bubble inside [margin, 1 - margin]², tail at the bottom left."""
    span = 1 - 2 * margin
    body = rounded_rect(margin, margin + 0.05 * span, 1 - margin, margin + 0.72 * span, 0.16 * span)
    tail = triangle((margin + 0.18 * span, margin + 0.66 * span), (margin + 0.42 * span, margin + 0.66 * span),
                    (margin + 0.10 * span, margin + 0.95 * span))
    return union(body, tail)


def _dots(margin: float, r: float) -> Shape:
    span = 1 - 2 * margin
    y = margin + 0.385 * span
    return union(*(circle(margin + fx * span, y, r * span) for fx in (0.28, 0.5, 0.72)))


def coverage(shape: Shape, size: int) -> list[list[float]]:
    """Per-pixel coverage of ``shape`` on a size×size grid: exact 0/1 where a pixel's corners agree, 4×4
    samples on the edges (shapes are much larger than a pixel, so that is the same picture, much faster)."""
    corners = [[shape(x / size, y / size) for x in range(size + 1)] for y in range(size + 1)]
    result = []
    for py in range(size):
        row = []
        for px in range(size):
            c = corners[py][px]
            if c == corners[py][px + 1] == corners[py + 1][px] == corners[py + 1][px + 1]:
                row.append(1.0 if c else 0.0)
                continue
            hits = sum(shape((px + (sx + 0.5) / _SAMPLES) / size, (py + (sy + 0.5) / _SAMPLES) / size)
                       for sy in range(_SAMPLES) for sx in range(_SAMPLES))
            row.append(hits / (_SAMPLES * _SAMPLES))
        result.append(row)
    return result


def color_icon(size: int = 192) -> bytes:
    """Full-colour icon: a white bubble with indigo dots on an indigo rounded square."""
    background = coverage(rounded_rect(0, 0, 1, 1, 0.18), size)
    bubble, dots = coverage(_bubble(0.2), size), coverage(_dots(0.2, 0.075), size)
    rows = []
    for py in range(size):
        row = []
        for px in range(size):
            fg = bubble[py][px] * (1 - dots[py][px])
            rgb = tuple(round(WHITE[i] * fg + ACCENT[i] * (1 - fg)) for i in range(3))
            row.append((*rgb, round(255 * background[py][px])))
        rows.append(row)
    return png(size, size, rows)  # type: ignore[arg-type]


def outline_icon(size: int = 32) -> bytes:
    """Outline icon: the bubble's white outline and dots on transparent (what Teams requires)."""
    outer, inner = _bubble(0.06), _bubble(0.06 + 2.2 / size)
    stroke = lambda x, y: outer(x, y) and not inner(x, y)  # noqa: E731
    shape = union(stroke, _dots(0.06, 0.07))
    rows = [[(*WHITE, round(255 * a)) for a in row] for row in coverage(shape, size)]
    return png(size, size, rows)  # type: ignore[arg-type]
