"""Digits that are not MNIST: strokes drawn the way a mouse draws them, and photograph-like
renderings of handwriting. They measure what the Try-it page and `trainlab predict` meet in use:
a digit drawn on a canvas or photographed on paper is thick or thin, off-centre, tilted, blurred
and on a coloured background, unlike MNIST's centred scans.

`digit_strokes(d, rng)` gives one jittered set of strokes for digit d (polylines in a unit square,
as a hand or a mouse would trace them); `render_strokes` draws them as a canvas would (round caps,
the pen width of a drawing app); `photograph` turns a light-on-dark ink image into a photo of dark
ink on paper (tint, uneven light, blur, noise, JPEG). The browser test and bench/handwriting.py use
the same strokes: the test moves the mouse along them, the bench renders them.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Each digit: one or more templates; a template is a list of strokes; a stroke is (x, y) points in
# a unit square (y down), traced in the usual writing order.
TEMPLATES: dict[int, list[list[list[tuple[float, float]]]]] = {
    0: [[[(0.5, 0.08), (0.28, 0.2), (0.2, 0.5), (0.28, 0.8), (0.5, 0.92), (0.72, 0.8), (0.8, 0.5), (0.72, 0.2),
          (0.5, 0.08), (0.45, 0.12)]]],
    1: [[[(0.5, 0.08), (0.5, 0.92)]],
        [[(0.34, 0.24), (0.52, 0.08), (0.52, 0.92)]]],
    2: [[[(0.24, 0.28), (0.34, 0.12), (0.52, 0.07), (0.7, 0.14), (0.76, 0.3), (0.68, 0.48), (0.22, 0.9), (0.8, 0.9)]]],
    3: [[[(0.24, 0.16), (0.5, 0.07), (0.72, 0.16), (0.72, 0.34), (0.46, 0.48), (0.74, 0.6), (0.76, 0.8), (0.52, 0.93),
          (0.22, 0.84)]]],
    4: [[[(0.62, 0.92), (0.62, 0.08), (0.18, 0.66), (0.84, 0.66)]],
        [[(0.28, 0.08), (0.22, 0.58), (0.8, 0.58)], [(0.64, 0.28), (0.64, 0.94)]]],
    5: [[[(0.74, 0.08), (0.32, 0.08), (0.28, 0.44), (0.5, 0.38), (0.72, 0.48), (0.76, 0.72), (0.6, 0.9),
          (0.36, 0.92), (0.2, 0.82)]],
        [[(0.32, 0.08), (0.28, 0.44), (0.5, 0.38), (0.72, 0.48), (0.76, 0.72), (0.6, 0.9), (0.36, 0.92), (0.2, 0.82)],
         [(0.32, 0.08), (0.76, 0.08)]]],
    6: [[[(0.68, 0.08), (0.44, 0.24), (0.28, 0.52), (0.28, 0.8), (0.5, 0.93), (0.7, 0.82), (0.72, 0.62),
          (0.55, 0.5), (0.36, 0.54), (0.28, 0.66)]]],
    7: [[[(0.2, 0.1), (0.8, 0.1), (0.44, 0.92)]],
        [[(0.2, 0.1), (0.8, 0.1), (0.44, 0.92)], [(0.36, 0.5), (0.72, 0.5)]]],
    8: [[[(0.66, 0.16), (0.5, 0.07), (0.32, 0.14), (0.32, 0.32), (0.5, 0.47), (0.7, 0.62), (0.72, 0.84),
          (0.5, 0.94), (0.28, 0.84), (0.3, 0.62), (0.5, 0.47), (0.68, 0.32), (0.66, 0.16)]]],
    9: [[[(0.72, 0.3), (0.6, 0.46), (0.38, 0.46), (0.28, 0.28), (0.38, 0.1), (0.6, 0.08), (0.72, 0.2), (0.72, 0.34),
          (0.68, 0.64), (0.6, 0.93)]]],
}


def _smooth(points: np.ndarray, per_segment: int = 8) -> np.ndarray:
    """A Catmull-Rom curve through the points (a hand draws curves, not corners between them)."""
    if len(points) < 3:
        return points
    p = np.vstack([points[:1], points, points[-1:]])
    out = []
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    out.append(points[-1:])
    return np.vstack(out)


def digit_strokes(digit: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One person's way of writing `digit`: a template, smoothed, with its own slant, width,
    rotation, size and position, and a shaky hand; polylines in the unit square."""
    templates = TEMPLATES[digit]
    strokes = [np.asarray(s, dtype=np.float64) for s in templates[rng.integers(len(templates))]]
    angle = math.radians(rng.uniform(-12, 12))
    shear = rng.uniform(-0.25, 0.15)
    sx, sy = rng.uniform(0.75, 1.15), rng.uniform(0.85, 1.1)
    size = rng.uniform(0.55, 0.95)
    centre = np.array([0.5, 0.5]) + rng.uniform(-0.12, 0.12, 2)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    m = rot @ np.array([[sx, shear], [0, sy]]) * size
    out = []
    for s in strokes:
        s = s + rng.normal(0, 0.025, s.shape)  # where this hand puts each turn
        s = _smooth(s)
        s = (s - 0.5) @ m.T + centre
        out.append(np.clip(s, 0.02, 0.98))
    return out


def mouse_path(stroke: np.ndarray, rng: np.random.Generator, canvas: int = 280) -> np.ndarray:
    """The points a mouse reports along a stroke: irregular steps of 2-9 pixels, integer positions."""
    pts = stroke * canvas
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    dist = np.concatenate([[0], np.cumsum(seg)])
    steps = np.cumsum(rng.uniform(2, 9, int(dist[-1] / 2) + 2))
    steps = np.concatenate([[0], steps[steps < dist[-1]], [dist[-1]]])
    xs, ys = np.interp(steps, dist, pts[:, 0]), np.interp(steps, dist, pts[:, 1])
    return np.round(np.stack([xs, ys], 1))


def render_strokes(strokes: list[np.ndarray], rng: np.random.Generator, canvas: int = 280,
                   width: float | None = None) -> Image.Image:
    """White strokes on black as a drawing canvas shows them (round caps, a pen 10-30 px wide on a
    280 px canvas unless `width` is given), through the mouse's sampled points. An L image."""
    im = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(im)
    w = int(round(width if width is not None else rng.uniform(10, 30)))
    for s in strokes:
        pts = [tuple(p) for p in mouse_path(s, rng, canvas)]
        draw.line(pts, fill=255, width=w, joint="curve")
        r = w / 2
        for x, y in (pts[0], pts[-1]):
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return im


def photograph(ink: np.ndarray, rng: np.random.Generator, size: int = 160) -> bytes:
    """A JPEG 'photo' of light-on-dark `ink` (H, W uint8) written in dark ink on paper: paper tint,
    a light gradient, a little blur and sensor noise, off-centre framing."""
    g = Image.fromarray(ink).resize((size * 3 // 5, size * 3 // 5), Image.BICUBIC)
    canvas = Image.new("L", (size, size), 0)
    off = rng.integers(size // 10, size - g.size[0] - size // 10 + 1, 2)
    canvas.paste(g, tuple(int(o) for o in off))
    a = np.asarray(canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5))), np.float64) / 255.0
    paper = np.array([rng.uniform(200, 250), rng.uniform(190, 245), rng.uniform(160, 235)])
    pen = np.array([rng.uniform(10, 60), rng.uniform(10, 60), rng.uniform(20, 110)])
    yy, xx = np.mgrid[0:size, 0:size] / size
    light = 1 - rng.uniform(0, 0.25) * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) ** 2
    rgb = (paper * (1 - a[..., None]) + pen * a[..., None]) * light[..., None]
    rgb += rng.normal(0, rng.uniform(2, 8), rgb.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").save(out, "JPEG", quality=int(rng.integers(60, 90)))
    return out.getvalue()


def drawn_digits(per_class: int, seed: int = 0) -> tuple[list[bytes], np.ndarray]:
    """`per_class` mouse-drawn digits of each class as PNG bytes (what the page's canvas sends), and labels."""
    rng = np.random.default_rng(seed)
    files, labels = [], []
    for d in range(10):
        for _ in range(per_class):
            out = io.BytesIO()
            render_strokes(digit_strokes(d, rng), rng).save(out, "PNG")
            files.append(out.getvalue())
            labels.append(d)
    return files, np.asarray(labels)


def photographed_digits(images: np.ndarray, labels: np.ndarray, seed: int = 0) -> tuple[list[bytes], np.ndarray]:
    """Photo-like JPEGs of handwritten digit images given light-on-dark (N, H, W), any scale."""
    rng = np.random.default_rng(seed)
    imgs = np.asarray(images, np.float64)
    imgs = (255 * imgs / max(imgs.max(), 1e-9)).astype(np.uint8)
    return [photograph(im, rng) for im in imgs], np.asarray(labels)
