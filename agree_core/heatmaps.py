"""Draw why a page matched over its image: evidence boxes (:func:`draw_evidence`), or the
whole similarity map (:func:`overlay_heatmap`)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["draw_evidence", "overlay_heatmap", "contact_sheet"]

# A perceptual yellow-orange-red ramp; low values stay transparent.
_RAMP = np.array([[255, 237, 160], [254, 178, 76], [240, 59, 32], [189, 0, 38]], dtype=np.float32)


def _colorize(values: np.ndarray) -> np.ndarray:
    """``(h, w)`` in [0, 1] -> ``(h, w, 3)`` colours along the ramp."""
    pos = values * (len(_RAMP) - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, len(_RAMP) - 2)
    frac = (pos - lo)[..., None]
    return _RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac


def _gaussian_blur(values: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a small ``(rows, cols)`` grid, ``sigma`` in cells."""
    radius = max(1, int(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(values, radius, mode="constant")
    rows = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, padded)
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, rows)


def overlay_heatmap(image: Image.Image, sim_map: torch.Tensor, *, alpha: float = 0.6,
                    blur: float = 0.6) -> Image.Image:
    """The page with its similarity map laid over it.

    Args:
        image: the page.
        sim_map: ``(rows, cols)`` per-cell relevance (e.g. :func:`agree_core.scoring.similarity_map`).
        alpha: opacity of the strongest cell.
        blur: Gaussian blur (sigma, in cells), so sparse text-layer maps read as regions.
    """
    if sim_map.dim() != 2:
        raise ValueError(f"sim_map must be (rows, cols), got shape {tuple(sim_map.shape)}")
    base = image.convert("RGB")
    values = sim_map.float().clamp(min=0).numpy()
    top = float(values.max())
    if top <= 0:
        return base.copy()
    if blur > 0:
        values = _gaussian_blur(values, blur)
    grid = torch.from_numpy(values / max(float(values.max()), 1e-9))[None, None]  # (1, 1, rows, cols)
    up = torch.nn.functional.interpolate(grid, size=(base.height, base.width), mode="bilinear",
                                         align_corners=False)
    v = up[0, 0].clamp(0, 1).numpy()  # (h, w)
    weight = (alpha * v)[..., None]  # (h, w, 1)
    page = np.asarray(base, dtype=np.float32)
    out = page * (1 - weight) + _colorize(v) * weight
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


def draw_evidence(image: Image.Image, evidence: list[dict], *, alpha: float = 0.45,
                  outline: tuple[int, int, int] = (189, 0, 38)) -> Image.Image:
    """The page with its evidence (:mod:`agree_core.evidence`) drawn over it: each box
    shaded by its share of the best box's score (the best at ``alpha``), outlined, and
    numbered by rank. Boxes are fractions of the page, so any size of image works."""
    base = image.convert("RGB")
    if not evidence:
        return base.copy()
    w, h = base.size
    best = max(float(e["score"]) for e in evidence) or 1.0
    shade = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(shade)
    rects = []
    for e in evidence:
        x0, y0, x1, y1 = e["box"]
        pad = max(1, round(0.002 * w))  # a word box drawn tight to the glyphs hides nothing
        rect = [round(x0 * w) - pad, round(y0 * h) - pad, round(x1 * w) + pad, round(y1 * h) + pad]
        share = max(0.15, float(e["score"]) / best)
        colour = tuple(int(c) for c in _colorize(np.array([share]))[0])
        draw.rectangle(rect, fill=(*colour, round(255 * alpha * share)))
        rects.append(rect)
    out = Image.alpha_composite(base.convert("RGBA"), shade).convert("RGB")
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=max(10, h // 70))
    width = max(1, w // 400)
    for rank, rect in enumerate(rects, start=1):
        draw.rectangle(rect, outline=outline, width=width)
        label = str(rank)
        x, y = rect[0], max(0, rect[1] - font.size - 2)
        box = draw.textbbox((x, y), label, font=font)
        draw.rectangle(box, fill=outline)
        draw.text((x, y), label, fill="white", font=font)
    return out


def contact_sheet(panels: list[tuple[Image.Image, str]], *, columns: int = 3,
                  width: int = 520) -> Image.Image:
    """Panels side by side, each scaled to ``width`` pixels with its caption above it."""
    if not panels:
        raise ValueError("no panels to draw")
    font = ImageFont.load_default(size=16)
    caption_h = 44
    scaled = [(img.resize((width, max(1, round(img.height * width / img.width)))), text)
              for img, text in panels]
    cell_h = max(img.height for img, _ in scaled) + caption_h
    columns = min(columns, len(scaled))
    n_rows = (len(scaled) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (width + 16) + 16, n_rows * (cell_h + 16) + 16), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (img, text) in enumerate(scaled):
        x = 16 + (i % columns) * (width + 16)
        y = 16 + (i // columns) * (cell_h + 16)
        for line_no, line in enumerate(text.splitlines()[:2]):
            draw.text((x, y + line_no * 20), line, fill="black", font=font)
        sheet.paste(img, (x, y + caption_h))
        draw.rectangle([x - 1, y + caption_h - 1, x + img.width, y + caption_h + img.height],
                       outline=(160, 160, 160))
    return sheet
