"""A folder of phone-like photos in 3 classes, to try trainlab on your own images without any:

    python examples/make_photo_folder.py ./photos          # 60 JPEGs, 20 per class

Each photo shows one coloured shape (class `circles`, `squares` or `triangles`) of random size,
colour and place on an unevenly lit, tinted background, at the sizes phones and apps produce:
4032x3024 and 3024x4032 (stored landscape with an EXIF rotation, as phones store portraits),
1920x1080, 1600x1200, 1280x960, 1080x1440 and 640x480. Seeded: the same folder every time.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZES = [(4032, 3024), (3024, 4032), (1920, 1080), (1600, 1200), (1280, 960), (1080, 1440), (640, 480)]
CLASSES = ("circles", "squares", "triangles")


def photo(kind: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    w, h = size
    small = (max(8, w // 8), max(8, h // 8))  # the background is smooth: draw it small, enlarge it
    yy, xx = np.mgrid[0:small[1], 0:small[0]] / max(small)
    tint = rng.uniform(120, 235, 3)
    light = 1 - rng.uniform(0, 0.35) * ((xx - rng.uniform(0, 1)) ** 2 + (yy - rng.uniform(0, 1)) ** 2)
    bg = np.clip(tint * light[..., None] + rng.normal(0, 3, (*light.shape, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(bg, "RGB").resize((w, h), Image.BILINEAR)
    draw = ImageDraw.Draw(im)
    r = rng.uniform(0.15, 0.35) * min(w, h)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3) // 2)  # darker than the background
    if kind == "circles":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif kind == "squares":
        a = rng.uniform(0, math.pi / 2)
        draw.polygon([(cx + r * math.cos(a + k * math.pi / 2), cy + r * math.sin(a + k * math.pi / 2)) for k in range(4)],
                     fill=colour)
    else:
        a = rng.uniform(0, 2 * math.pi)
        draw.polygon([(cx + r * math.cos(a + k * 2 * math.pi / 3), cy + r * math.sin(a + k * 2 * math.pi / 3)) for k in range(3)],
                     fill=colour)
    return im


def save_as_phone(im: Image.Image, path: Path, rng: np.random.Generator) -> None:
    """A portrait photo the way a phone stores it: the sensor's landscape pixels and an EXIF
    Orientation of 6 (rotate 90 degrees clockwise to show)."""
    exif = Image.Exif()
    if im.height > im.width:
        exif[0x0112] = 6
        im = im.transpose(Image.ROTATE_90)
    im.save(path, "JPEG", quality=int(rng.integers(80, 95)), exif=exif)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    for kind in CLASSES:
        (args.folder / kind).mkdir(parents=True, exist_ok=True)
        for i in range(args.per_class):
            size = SIZES[int(rng.integers(len(SIZES)))]
            save_as_phone(photo(kind, size, rng), args.folder / kind / f"IMG_{i:04d}.jpg", rng)
    print(f"wrote {args.per_class * len(CLASSES)} photos to {args.folder}/ ({', '.join(CLASSES)})")


if __name__ == "__main__":
    main()
