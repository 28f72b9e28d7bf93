"""Image files to dataset-format uint8 arrays: guarded decoding (size limit, EXIF, alpha, 16-bit),
and the preparation styles that make a user's photo look like the run's dataset (MNIST's digit
recipe, Fashion-MNIST's, or a plain resize). Used by image trees and by prediction."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------------------------
# Image files -> dataset-format uint8 arrays (used by image trees and by predict)
# ---------------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_PIXELS = 40_000_000  # larger images are refused before decoding (decompression-bomb guard)
STYLES = ("digit", "fashion", "photo")


def style_for(dataset: str) -> str:
    """How files are prepared for a dataset: MNIST's digit pipeline, Fashion-MNIST's, or a plain resize."""
    return {"mnist": "digit", "fashion-mnist": "fashion"}.get(dataset, "photo")


def open_image(data: bytes, name: str = "image"):
    """Decode bytes into an RGB or L PIL image: first frame, EXIF rotation applied, alpha composited
    on white, 16-bit scaled to 8-bit. Raises ValueError with a one-line reason."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    if not data:
        raise ValueError("empty file")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ValueError("not an image PIL can read (PNG, JPEG, BMP, GIF, WebP, TIFF)") from None
    except Image.DecompressionBombError as exc:
        raise ValueError(f"refused: {exc}") from None
    w, h = im.size
    if w * h > MAX_PIXELS or w <= 0 or h <= 0:
        raise ValueError(f"{w}x{h} pixels is over the {MAX_PIXELS:,}-pixel limit (a decompression bomb?)")
    try:
        im.seek(0)  # animated GIF/WebP: the first frame
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            arr = np.asarray(im, dtype=np.float64)
            scale = 257.0 if (im.mode.startswith("I;16") or arr.max() > 255) else 1.0
            im = Image.fromarray(np.clip(arr / scale, 0, 255).astype(np.uint8), "L")
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            im = im.convert("RGBA")
            im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im).convert("RGB")
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")
        im.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot decode it ({exc})") from None
    return im


def resample(im, size: tuple[int, int], kind: str, reducing_gap: float | None = None):
    """PIL's `resize(size, filter, reducing_gap=...)` with its two passes in a fixed order:
    horizontal, then vertical. Pillow itself picks the order by cost (13.0 does), and the 8-bit
    image between the passes makes the order show in the pixels; a fixed order is what the ONNX
    graph of `trainlab export --prepare full` (graph_prep.py) can follow exactly, on any Pillow."""
    from PIL import Image
    resampling = {"bilinear": Image.BILINEAR, "lanczos": Image.LANCZOS}[kind]
    w, h = size
    W, H = im.size
    if (W, H) == (w, h):
        return im
    box_w, box_h = float(W), float(H)
    fx = max(1, int(W / w / reducing_gap)) if reducing_gap else 1
    fy = max(1, int(H / h / reducing_gap)) if reducing_gap else 1
    if fx > 1 or fy > 1:  # PIL's reduce first: the mean of each fx x fy block
        im = im.reduce((fx, fy))
        box_w, box_h = W / fx, H / fy
    rw, rh = im.size
    if (w, float(w)) != (rw, box_w):
        im = im.resize((w, rh), resampling, box=(0, 0, box_w, rh))
    if (h, float(h)) != (rh, box_h):
        im = im.resize((w, h), resampling, box=(0, 0, w, box_h))
    return im


def resize_to(im, size: tuple[int, int], channels: int) -> np.ndarray:
    """'photo' style: convert to L or RGB and resize to (H, W) (bilinear, PIL's reducing gap 3); uint8 (H, W, C)."""
    im = resample(im.convert("L" if channels == 1 else "RGB"), (size[1], size[0]), "bilinear", reducing_gap=3.0)
    return np.asarray(im, dtype=np.uint8).reshape(size[0], size[1], channels)


def _ink(im) -> np.ndarray:
    """Grayscale as light-on-dark 0-255 floats. The image is turned paper-light (inverted when its
    border is dark), the paper is estimated locally (a max filter wider than a stroke, at low
    resolution) and the ink is how much darker than its own paper each pixel is: uneven light and
    tinted paper drop out. Faint noise under 12% of the strongest ink is cut, then it is stretched
    so the strongest ink is 255."""
    from PIL import Image, ImageFilter
    g = np.asarray(im.convert("L"), dtype=np.float64)
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    if np.median(border) <= 127:
        g = 255.0 - g
    h, w = g.shape
    scale = min(1.0, 64 / max(h, w))
    small = resample(Image.fromarray(g.astype(np.uint8)), (max(1, round(w * scale)), max(1, round(h * scale))), "bilinear")
    k = max(3, (min(small.size) // 7) | 1)
    paper = resample(small.filter(ImageFilter.MaxFilter(k)).filter(ImageFilter.BoxBlur(k // 2)), (w, h), "bilinear")
    ink = np.clip(np.maximum(np.asarray(paper, np.float64), np.median(g)) - g, 0, None)
    top = ink.max()
    if top <= 0:
        return ink
    ink = np.clip(ink - 0.12 * top, 0, None)
    return ink * (255.0 / ink.max())


def _crop_to_ink(g: np.ndarray, threshold: float = 40.0) -> np.ndarray:
    ys, xs = np.nonzero(g > threshold)
    if len(ys) == 0:
        return g
    return g[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def _fit(g: np.ndarray, box: int) -> np.ndarray:
    """Resize so the longer side is `box` pixels, keeping the aspect ratio (antialiased)."""
    from PIL import Image
    h, w = g.shape
    scale = box / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    # rounded, not truncated: the strongest ink is 254.99999999999997 after the stretch in _ink
    img = resample(Image.fromarray(np.clip(np.rint(g), 0, 255).astype(np.uint8), "L"), (nw, nh), "lanczos")
    return np.asarray(img, dtype=np.float64)


def prepare_digit(im, size: int = 28, box: int = 20) -> np.ndarray:
    """MNIST's own recipe: light-on-dark, crop to the ink, fit into 20x20 keeping the aspect ratio,
    then place in 28x28 so the centre of mass is at the centre. uint8 (28, 28, 1)."""
    g = _fit(_crop_to_ink(_ink(im)), box)
    total = g.sum()
    if total > 0:
        ys, xs = np.indices(g.shape)
        cy, cx = (ys * g).sum() / total, (xs * g).sum() / total
    else:
        cy, cx = (g.shape[0] - 1) / 2, (g.shape[1] - 1) / 2
    out = np.zeros((size, size))
    # MNIST puts the centre of mass at pixel (14, 14) of 28x28 (measured: mean 14.02, 14.04), not 13.5
    top = int(round(size / 2 - cy))
    left = int(round(size / 2 - cx))
    top = min(max(top, 0), size - g.shape[0])
    left = min(max(left, 0), size - g.shape[1])
    out[top:top + g.shape[0], left:left + g.shape[1]] = g
    return np.clip(out, 0, 255).astype(np.uint8)[..., None]


def prepare_fashion(im, size: int = 28) -> np.ndarray:
    """Fashion-MNIST's conversion: light-on-dark, trimmed, longest side 28, centred. uint8 (28, 28, 1)."""
    g = _fit(_crop_to_ink(_ink(im), threshold=10.0), size)
    out = np.zeros((size, size))
    top, left = (size - g.shape[0]) // 2, (size - g.shape[1]) // 2
    out[top:top + g.shape[0], left:left + g.shape[1]] = g
    return np.clip(out, 0, 255).astype(np.uint8)[..., None]


def prepare_image(im, style: str, shape: tuple[int, int, int]) -> np.ndarray:
    """A decoded image in the run's dataset format (H, W, C) uint8; `shape` is (C, H, W)."""
    c, h, w = shape
    if style == "digit" and c == 1:
        return prepare_digit(im, size=h, box=round(h * 20 / 28))
    if style == "fashion" and c == 1:
        return prepare_fashion(im, size=h)
    return resize_to(im, (h, w), c)


def expand_inputs(inputs) -> list[str]:
    """Files as given; folders become their image files (sorted, recursively)."""
    out = []
    for item in inputs:
        p = Path(item)
        found = sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()) if p.is_dir() else []
        out += found or [str(item)]  # a folder without images stays, and fails as one input
    return out


def load_file(path: str | os.PathLike, style: str, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(original as an array for display, dataset-format uint8 (H, W, C)); ValueError with the reason."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except IsADirectoryError:
        raise ValueError(f"a folder with no images ({', '.join(IMAGE_EXTENSIONS)})") from None
    except OSError as exc:
        raise ValueError(f"cannot read it ({exc.strerror or exc})") from None
    im = open_image(data, str(path))
    return np.asarray(im), prepare_image(im, style, shape)


def png_data_url(arr: np.ndarray, size: int | None = None) -> str:
    """`png_bytes` as a data: URL, for a page or a self-contained report."""
    import base64
    return "data:image/png;base64," + base64.b64encode(png_bytes(arr, size)).decode()


def png_bytes(arr: np.ndarray, size: int | None = None) -> bytes:
    """A uint8 image (H, W), (H, W, 1) or (H, W, 3) as PNG bytes, optionally enlarged to `size` px
    with hard pixel edges (what a 28x28 input looks like, pixel by pixel)."""
    from PIL import Image
    a = np.asarray(arr, dtype=np.uint8)
    im = Image.fromarray(a[..., 0] if a.ndim == 3 and a.shape[2] == 1 else a)
    if size:
        im = im.resize((size, size * im.size[1] // im.size[0]), Image.NEAREST)
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()

