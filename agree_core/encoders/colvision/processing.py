"""Image-only processors for ColQwen and ColPali, built explicitly (no torchvision, no
``AutoProcessor``, no video processor).

Pages and queries are tokenised exactly as the published checkpoints were trained
(colpali-engine 0.3.x; see ``docs`` in :mod:`agree_core.encoders.colvision`):

ColQwen2.5 / ColQwen2 (left padding)
    page:  ``<|im_start|>user\\n<|vision_start|>`` + ``<|image_pad|>`` x (grid_h*grid_w/4)
           + ``<|vision_end|>Describe the image.<|im_end|><|endoftext|>``
    query: ``"Query: " + query + "<|endoftext|>" x 10`` (no special tokens added)
    image: ``smart_resize`` to multiples of 28 with at most ``max_visual_tokens * 28 * 28``
           pixels (768 tokens by default), CLIP mean/std, 14-px patches, 2x2 merge.

ColPali (right padding)
    page:  ``<image>`` x 1024 + ``<bos><bos>Describe the image.\\n`` (PaliGemmaProcessor inserts
           a BOS after the last image token and appends a newline to ``<image><bos>Describe the image.``)
    query: ``<bos>Query: `` + query + ``<pad>`` x 10 + ``\\n``
    image: 448 x 448, mean/std 0.5.

Images are resized here with PIL (bicubic) to the size the processors would choose, which
gives the same pixels (checked in the tests) without ever handing a huge page to numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from PIL import Image

__all__ = ["Inputs", "QwenInputs", "PaliGemmaInputs", "collate", "check_image", "qwen_pixels",
           "MAX_IMAGE_PIXELS", "MAX_ASPECT_RATIO"]

MAX_IMAGE_PIXELS = 200_000_000  # a page image above this is refused rather than resized
MAX_ASPECT_RATIO = 200  # Qwen's smart_resize limit
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass
class Inputs:
    """One page or query, ready to collate."""

    input_ids: list[int]
    pixel_values: torch.Tensor | None = None  # Qwen: (n_patches, patch_dim); PaliGemma: (3, s, s)
    image_grid_thw: tuple[int, int, int] | None = None
    grid: tuple[int, int] | None = None  # (rows, cols) of the image tokens, in sequence order


def check_image(image: Image.Image | None) -> Image.Image:
    """The page image in RGB, or a ``ValueError`` saying what is wrong with it."""
    if image is None:
        raise ValueError("the page has no image: visual encoders need rendered pages "
                         "(iter_pages(..., render=True) or Page.from_image)")
    w, h = image.size
    if w < 1 or h < 1:
        raise ValueError(f"the page image is empty ({w} x {h} pixels)")
    if w * h > MAX_IMAGE_PIXELS:
        raise ValueError(f"the page image is too large ({w} x {h} = {w * h / 1e6:.0f} megapixels, "
                         f"limit {MAX_IMAGE_PIXELS / 1e6:.0f}): render it at a lower dpi")
    if max(w, h) / min(w, h) > MAX_ASPECT_RATIO:
        raise ValueError(f"the page image is {w} x {h} pixels, an aspect ratio above "
                         f"{MAX_ASPECT_RATIO}:1 that the vision encoder cannot take: split or crop it")
    return image.convert("RGB") if image.mode != "RGB" else image


def page_images(pages) -> list[Image.Image]:
    """The RGB images of ``pages``, or a ``ValueError`` naming the page that has none usable."""
    images = []
    for i, page in enumerate(pages):
        try:
            images.append(check_image(page.image))
        except ValueError as e:
            raise ValueError(f"page {page.page_no or i + 1} of {page.source}: {e}") from e
    return images


def _tokens(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _token_id(tokenizer, token: str) -> int:
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or tid == tokenizer.unk_token_id:
        raise ValueError(f"the tokenizer has no {token!r} token: is this the right checkpoint?")
    return int(tid)


def qwen_pixels(image: Image.Image, processor, min_pixels: int, max_pixels: int
                ) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Patches ``(grid_h * grid_w, 3 * 2 * 14 * 14)`` and ``(1, grid_h, grid_w)`` of a page for
    Qwen2(.5)-VL (what ``Qwen2VLImageProcessor`` gives, resized with at most ``max_pixels``)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    image = check_image(image)
    factor = processor.patch_size * processor.merge_size
    h, w = smart_resize(image.height, image.width, factor, min_pixels, max_pixels)
    image = image.resize((w, h), Image.BICUBIC)
    out = processor(image, do_resize=False, return_tensors="pt")
    t, gh, gw = (int(x) for x in out["image_grid_thw"][0])
    return out["pixel_values"], (t, gh, gw)


def qwen_image_processor(preprocessor: dict[str, Any]):
    """A PIL Qwen2-VL image processor from a checkpoint's ``preprocessor_config.json``
    (``min_pixels``/``max_pixels`` may sit at the top level or inside ``size``)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    keys = ("image_mean", "image_std", "patch_size", "merge_size", "temporal_patch_size",
            "rescale_factor")
    kwargs = {k: preprocessor[k] for k in keys if preprocessor.get(k) is not None}
    kwargs.setdefault("image_mean", CLIP_MEAN)
    kwargs.setdefault("image_std", CLIP_STD)
    return Qwen2VLImageProcessorPil(**kwargs)


def qwen_min_pixels(preprocessor: dict[str, Any]) -> int:
    size = preprocessor.get("size") or {}
    return int(preprocessor.get("min_pixels") or size.get("shortest_edge") or size.get("min_pixels")
               or 56 * 56)


class QwenInputs:
    """Pages and queries for ColQwen2.5 and ColQwen2."""

    padding_side = "left"
    image_token = "<|image_pad|>"

    def __init__(self, tokenizer, preprocessor: dict[str, Any], *, max_visual_tokens: int,
                 page_prompt: str, query_prefix: str, query_augmentation: int,
                 augmentation_token: str = "<|endoftext|>"):
        self.tokenizer = tokenizer
        self.image_processor = qwen_image_processor(preprocessor)
        merge = self.image_processor.merge_size
        unit = (self.image_processor.patch_size * merge) ** 2  # pixels per visual token
        self.max_pixels = max_visual_tokens * unit
        self.min_pixels = min(qwen_min_pixels(preprocessor), self.max_pixels)
        self.image_token_id = _token_id(tokenizer, self.image_token)
        self.pad_id = _token_id(tokenizer, augmentation_token)  # Qwen pads with <|endoftext|>
        self.prompt_ids = _tokens(tokenizer, page_prompt)
        if self.prompt_ids.count(self.image_token_id) != 1:
            raise ValueError(f"page_prompt must hold {self.image_token} exactly once, got {page_prompt!r}")
        self.query_prefix = query_prefix
        self.query_suffix = augmentation_token * query_augmentation

    def page(self, image: Image.Image) -> Inputs:
        pixels, (t, gh, gw) = qwen_pixels(image, self.image_processor, self.min_pixels, self.max_pixels)
        merge = self.image_processor.merge_size
        n = t * gh * gw // merge**2
        at = self.prompt_ids.index(self.image_token_id)
        ids = self.prompt_ids[:at] + [self.image_token_id] * n + self.prompt_ids[at + 1 :]
        return Inputs(ids, pixels, (t, gh, gw), (gh // merge, gw // merge))

    def query(self, text: str) -> Inputs:
        return Inputs(_tokens(self.tokenizer, self.query_prefix + text + self.query_suffix))


class PaliGemmaInputs:
    """Pages and queries for ColPali."""

    padding_side = "right"
    image_token = "<image>"

    def __init__(self, tokenizer, preprocessor: dict[str, Any], *, image_size: int, patch_size: int,
                 page_prompt: str, query_prefix: str, query_augmentation: int,
                 query_suffix: str = "\n"):
        from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

        self.tokenizer = tokenizer
        self.size = image_size
        self.side = image_size // patch_size
        self.image_processor = SiglipImageProcessorPil(
            size={"height": image_size, "width": image_size},
            image_mean=preprocessor.get("image_mean", [0.5, 0.5, 0.5]),
            image_std=preprocessor.get("image_std", [0.5, 0.5, 0.5]),
            rescale_factor=preprocessor.get("rescale_factor", 1 / 255),
        )
        self.image_token_id = _token_id(tokenizer, self.image_token)
        bos, pad = tokenizer.bos_token, tokenizer.pad_token
        if bos is None or pad is None:
            raise ValueError("the ColPali tokenizer needs a bos and a pad token")
        self.pad_id = int(tokenizer.pad_token_id)
        if page_prompt.count(self.image_token) != 1:
            raise ValueError(f"page_prompt must hold {self.image_token} exactly once, got {page_prompt!r}")
        # what PaliGemmaProcessor makes of it: a BOS after the (last) image token, a final newline
        head, tail = page_prompt.split(self.image_token)
        self.prompt_head = _tokens(tokenizer, head)
        self.prompt_tail = _tokens(tokenizer, bos + tail + "\n")
        self.query_template = (bos + query_prefix, pad * query_augmentation + query_suffix)

    def page(self, image: Image.Image) -> Inputs:
        image = check_image(image).resize((self.size, self.size), Image.BICUBIC)
        pixels = self.image_processor(image, do_resize=False, return_tensors="pt")["pixel_values"][0]
        ids = self.prompt_head + [self.image_token_id] * self.side**2 + self.prompt_tail
        return Inputs(ids, pixels, None, (self.side, self.side))

    def query(self, text: str) -> Inputs:
        before, after = self.query_template
        return Inputs(_tokens(self.tokenizer, before + text + after))


def collate(items: Sequence[Inputs], pad_id: int, padding_side: str) -> dict[str, torch.Tensor]:
    """A padded batch: ``input_ids``/``attention_mask`` ``(batch, max_len)``, and
    ``pixel_values`` (Qwen: concatenated patches ``(sum n_patches, patch_dim)`` with
    ``image_grid_thw (batch, 3)``; PaliGemma: ``(batch, 3, s, s)``) when the items are pages."""
    longest = max(len(x.input_ids) for x in items)
    ids = torch.full((len(items), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), longest), dtype=torch.long)
    for i, x in enumerate(items):
        n = len(x.input_ids)
        where = slice(longest - n, longest) if padding_side == "left" else slice(0, n)
        ids[i, where] = torch.tensor(x.input_ids)
        mask[i, where] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if items[0].pixel_values is not None:
        if items[0].image_grid_thw is not None:
            batch["pixel_values"] = torch.cat([x.pixel_values for x in items])
            batch["image_grid_thw"] = torch.tensor([x.image_grid_thw for x in items])
        else:
            batch["pixel_values"] = torch.stack([x.pixel_values for x in items])
    return batch
