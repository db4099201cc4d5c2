"""Augmentations for multispectral patches (any band count), on tensors ``[B, C, H, W]``.

Only operations that are valid for reflectance stacks: random resized crop, horizontal / vertical
flips, band-wise gain/offset jitter and band dropout. No colour-space operations (hue, saturation,
grayscale) — those assume RGB. Every random draw comes from the ``torch.Generator`` passed in, so a
seeded generator gives identical views.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class MultispectralAugment:
    """Two independent calls give two views of a batch (SimCLR-style), shape and band count kept.

    ``crop_scale``: range of the crop's area fraction; ``crop_ratio``: range of its aspect ratio;
    ``gain`` / ``offset``: per-sample, per-band multiplicative ``1 + U(-gain, gain)`` and additive
    ``U(-offset, offset) * band std`` jitter; ``band_dropout``: probability that a band is zeroed
    (at least one band is always kept).
    """

    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    vflip: float = 0.5
    gain: float = 0.1
    offset: float = 0.1
    band_dropout: float = 0.1

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``x`` [B, C, H, W] float -> augmented copy [B, C, H, W]."""
        if x.dim() != 4:
            raise ValueError(f"expected [B, C, H, W], got shape {tuple(x.shape)}")
        out = random_resized_crop(x, generator, self.crop_scale, self.crop_ratio)
        out = random_flip(out, generator, self.hflip, self.vflip)
        out = band_jitter(out, generator, self.gain, self.offset)
        return band_dropout(out, generator, self.band_dropout)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_resized_crop(x: torch.Tensor, generator: torch.Generator, scale: tuple[float, float] = (0.5, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Per sample: crop a random box (area fraction in ``scale``, aspect in ``ratio``), resize back (bilinear)."""
    b, _, h, w = x.shape
    area = _uniform(b, *scale, generator)
    log_ratio = _uniform(b, float(torch.log(torch.tensor(ratio[0]))), float(torch.log(torch.tensor(ratio[1]))), generator)
    aspect = torch.exp(log_ratio)
    ch = torch.clamp(torch.round(torch.sqrt(area * aspect.reciprocal()) * h), 1, h).long()
    cw = torch.clamp(torch.round(torch.sqrt(area * aspect) * w), 1, w).long()
    u, v = torch.rand(b, generator=generator), torch.rand(b, generator=generator)
    top = torch.floor(u * (h - ch + 1)).long()
    left = torch.floor(v * (w - cw + 1)).long()
    views = []
    for i in range(b):
        crop = x[i:i + 1, :, top[i]:top[i] + ch[i], left[i]:left[i] + cw[i]]
        views.append(F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False))
    return torch.cat(views) if views else x.clone()


def random_flip(x: torch.Tensor, generator: torch.Generator, hflip: float = 0.5, vflip: float = 0.5) -> torch.Tensor:
    """Per sample: mirror left-right with probability ``hflip``, top-bottom with probability ``vflip``."""
    b = x.shape[0]
    h_mask = (torch.rand(b, generator=generator) < hflip).view(b, 1, 1, 1)
    v_mask = (torch.rand(b, generator=generator) < vflip).view(b, 1, 1, 1)
    out = torch.where(h_mask, x.flip(-1), x)
    return torch.where(v_mask, out.flip(-2), out)


def band_jitter(x: torch.Tensor, generator: torch.Generator, gain: float = 0.1, offset: float = 0.1) -> torch.Tensor:
    """Per sample and band: ``x * (1 + U(-gain, gain)) + U(-offset, offset) * std(band)``."""
    b, c = x.shape[:2]
    g = 1 + (torch.rand(b, c, 1, 1, generator=generator) * 2 - 1) * gain
    o = (torch.rand(b, c, 1, 1, generator=generator) * 2 - 1) * offset
    std = x.std(dim=(-2, -1), keepdim=True) if x.shape[-1] * x.shape[-2] > 1 else torch.zeros_like(o)
    return x * g + o * std


def band_dropout(x: torch.Tensor, generator: torch.Generator, p: float = 0.1) -> torch.Tensor:
    """Per sample: zero each band with probability ``p``, keeping at least one band."""
    b, c = x.shape[:2]
    if p <= 0 or c == 1:
        return x
    drop = torch.rand(b, c, generator=generator) < p
    keep_one = torch.randint(0, c, (b,), generator=generator)
    drop[torch.arange(b), keep_one] = False
    return x * (~drop).view(b, c, 1, 1).to(x.dtype)
