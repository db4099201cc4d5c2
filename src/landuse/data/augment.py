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
    ``U(-offset, offset) * band std`` jitter; ``band_dropout``: probability that a band is dropped
    (at least one band is always kept). A dropped band is set to ``fill`` (per band, e.g. the
    encoder's band means, so the dropped band reads as "no information" after normalisation) or to 0.
    """

    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    vflip: float = 0.5
    # classes differ by a few percent of reflectance per band: a stronger gain jitter teaches the
    # encoder to ignore exactly the spectral signal (measured: probe 0.60 at 0.1 vs 0.62 at 0.05)
    gain: float = 0.05
    offset: float = 0.1
    band_dropout: float = 0.1

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        problems = []
        if not 0 < lo <= hi <= 1:
            problems.append(f"crop_scale {self.crop_scale} must satisfy 0 < min <= max <= 1")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            problems.append(f"crop_ratio {self.crop_ratio} must satisfy 0 < min <= max")
        for name in ("hflip", "vflip", "band_dropout"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} {getattr(self, name)} must be a probability in [0, 1]")
        if not 0 <= self.gain < 1 or self.offset < 0:
            problems.append(f"gain {self.gain} must be in [0, 1) and offset {self.offset} >= 0")
        if problems:
            raise ValueError("; ".join(problems))

    def __call__(self, x: torch.Tensor, generator: torch.Generator, fill: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [B, C, H, W] float -> augmented copy [B, C, H, W]; ``fill`` [C]: value of dropped bands (default 0)."""
        if x.dim() != 4:
            raise ValueError(f"expected [B, C, H, W], got shape {tuple(x.shape)}")
        out = random_resized_crop(x, generator, self.crop_scale, self.crop_ratio)
        out = random_flip(out, generator, self.hflip, self.vflip)
        out = band_jitter(out, generator, self.gain, self.offset)
        return band_dropout(out, generator, self.band_dropout, fill)


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
    # draws come from the (CPU) generator so views are reproducible on any device
    h_mask = (torch.rand(b, generator=generator) < hflip).view(b, 1, 1, 1).to(x.device)
    v_mask = (torch.rand(b, generator=generator) < vflip).view(b, 1, 1, 1).to(x.device)
    out = torch.where(h_mask, x.flip(-1), x)
    return torch.where(v_mask, out.flip(-2), out)


def band_jitter(x: torch.Tensor, generator: torch.Generator, gain: float = 0.1, offset: float = 0.1) -> torch.Tensor:
    """Per sample and band: ``x * (1 + U(-gain, gain)) + U(-offset, offset) * std(band)``."""
    b, c = x.shape[:2]
    g = 1 + (torch.rand(b, c, 1, 1, generator=generator) * 2 - 1) * gain
    o = (torch.rand(b, c, 1, 1, generator=generator) * 2 - 1) * offset
    g, o = g.to(x.device), o.to(x.device)
    std = x.std(dim=(-2, -1), keepdim=True) if x.shape[-1] * x.shape[-2] > 1 else torch.zeros_like(o)
    return x * g + o * std


def band_dropout(x: torch.Tensor, generator: torch.Generator, p: float = 0.1,
                 fill: torch.Tensor | None = None) -> torch.Tensor:
    """Per sample: set each band to ``fill[band]`` (default 0) with probability ``p``, keeping at least one band.

    Zeroing raw reflectance would be an out-of-range value after per-band normalisation (a band
    mean of 0 is far outside the data), so the pretraining loop passes the encoder's band means.
    """
    b, c = x.shape[:2]
    if p <= 0 or c == 1:
        return x
    drop = torch.rand(b, c, generator=generator) < p
    keep_one = torch.randint(0, c, (b,), generator=generator)
    drop[torch.arange(b), keep_one] = False
    value = torch.zeros(c, dtype=x.dtype, device=x.device) if fill is None else torch.as_tensor(fill, dtype=x.dtype).to(x.device)
    return torch.where(drop.to(x.device).view(b, c, 1, 1), value.view(1, c, 1, 1), x)
