"""Image encoders for multispectral patches, a POI-set encoder, and the MMGR pretraining model.

Image encoders map ``x [B, C, H, W]`` (C = ``in_bands``, raw pixel values) to ``[B, out_dim]``;
each one normalises its input per band with the buffers ``band_mean`` / ``band_std`` (identity
until :meth:`ImageEncoder.set_normalization`), so the statistics travel with the weights.

* :class:`SmallCNN` — three conv blocks (GroupNorm), global average pooling: CPU-sized.
* :class:`ResNet50` — bottleneck ResNet written in torch, torchvision parameter names (``conv1``,
  ``bn1``, ``layer1.0.conv1`` …) so SSL4EO-style ResNet state_dicts load; ``layers`` / ``width``
  make a compact variant.
* :class:`ViT` — patch embedding + pre-norm transformer blocks with timm parameter names
  (``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.i.attn.qkv`` …) so SatMAE-style ViT
  state_dicts load; output is the final-normed class token.

:func:`load_external_encoder` loads a user-supplied state_dict with an explicit band map; nothing
here downloads weights.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class ImageEncoder(nn.Module):
    """Base: ``forward(x [B, in_bands, H, W]) -> [B, out_dim]`` with per-band input normalisation."""

    in_bands: int
    out_dim: int
    band_mean: torch.Tensor  # buffers (register_buffer in __init__)
    band_std: torch.Tensor

    def __init__(self, in_bands: int, out_dim: int) -> None:
        super().__init__()
        if in_bands < 1:
            raise ValueError(f"in_bands must be >= 1, got {in_bands}")
        self.in_bands, self.out_dim = int(in_bands), int(out_dim)
        self.register_buffer("band_mean", torch.zeros(in_bands))
        self.register_buffer("band_std", torch.ones(in_bands))

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-band statistics ``[in_bands]`` subtracted / divided before the network (std 0 -> 1)."""
        std = torch.as_tensor(std, dtype=torch.float32).clone()
        std[std <= 0] = 1.0
        self.band_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.band_std.copy_(std)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - band_mean) / band_std`` per channel; checks the band count."""
        if x.dim() != 4 or x.shape[1] != self.in_bands:
            raise ValueError(f"{type(self).__name__} expects [B, {self.in_bands}, H, W], got {tuple(x.shape)}")
        return (x - self.band_mean.view(1, -1, 1, 1)) / self.band_std.view(1, -1, 1, 1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Normalised ``x`` -> ``[B, out_dim]``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in_bands, H, W]`` raw pixels -> ``[B, out_dim]``."""
        return self.embed(self.normalize(x))


# --------------------------------------------------------------------------------------------
# SmallCNN
# --------------------------------------------------------------------------------------------


def _groups(channels: int) -> int:
    return math.gcd(channels, 8) or 1


class SmallCNN(ImageEncoder):
    """conv3×3(width)→GN→ReLU, conv3×3 stride 2 (2·width), conv3×3 stride 2 (4·width), avg pool, linear."""

    def __init__(self, in_bands: int, width: int = 32, out_dim: int = 64) -> None:
        super().__init__(in_bands, out_dim)
        w = (width, 2 * width, 4 * width)
        self.features = nn.Sequential(
            nn.Conv2d(in_bands, w[0], 3, padding=1), nn.GroupNorm(_groups(w[0]), w[0]), nn.ReLU(inplace=True),
            nn.Conv2d(w[0], w[1], 3, stride=2, padding=1), nn.GroupNorm(_groups(w[1]), w[1]), nn.ReLU(inplace=True),
            nn.Conv2d(w[1], w[2], 3, stride=2, padding=1), nn.GroupNorm(_groups(w[2]), w[2]), nn.ReLU(inplace=True),
        )
        self.proj = nn.Linear(w[2], out_dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.features(x).mean(dim=(-2, -1)))


# --------------------------------------------------------------------------------------------
# ResNet-50 (bottleneck)
# --------------------------------------------------------------------------------------------


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride) → 1×1 (×4) with BatchNorm and an identity / projection shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
                           if stride != 1 or inplanes != out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + identity)


class ResNet50(ImageEncoder):
    """Bottleneck ResNet; defaults are ResNet-50 (layers 3-4-6-3, width 64, out_dim 2048).

    ``small_input`` replaces the 7×7/2 stem + max-pool by a 3×3/1 stem (for 16–32 px patches).
    """

    def __init__(self, in_bands: int, layers: Sequence[int] = (3, 4, 6, 3), width: int = 64,
                 small_input: bool = False) -> None:
        super().__init__(in_bands, width * 8 * Bottleneck.expansion)
        if small_input:
            self.conv1 = nn.Conv2d(in_bands, width, 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_bands, width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        inplanes = width
        for i, blocks in enumerate(layers):
            planes = width * 2 ** i
            stage = []
            for j in range(blocks):
                stage.append(Bottleneck(inplanes, planes, stride=2 if (j == 0 and i > 0) else 1))
                inplanes = planes * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.num_stages = len(layers)
        self.out_dim = inplanes

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x.mean(dim=(-2, -1))


# --------------------------------------------------------------------------------------------
# ViT
# --------------------------------------------------------------------------------------------


class _PatchEmbed(nn.Module):
    def __init__(self, in_bands: int, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_bands, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, T, dim]


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), _Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(ImageEncoder):
    """Vision transformer: ``image_size / patch_size`` squared tokens + class token, pre-norm blocks.

    Inputs of another size than ``image_size`` (divisible by ``patch_size``) get bicubically
    interpolated position embeddings.
    """

    def __init__(self, in_bands: int, image_size: int = 16, patch_size: int = 4, dim: int = 64, depth: int = 2,
                 heads: int = 4, mlp_ratio: float = 2.0) -> None:
        super().__init__(in_bands, dim)
        if image_size % patch_size or dim % heads:
            raise ValueError(f"ViT: image_size {image_size} must be divisible by patch_size {patch_size} "
                             f"and dim {dim} by heads {heads}")
        self.patch_size, self.grid = patch_size, image_size // patch_size
        self.patch_embed = _PatchEmbed(in_bands, patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid ** 2 + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(_Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def _pos(self, gh: int, gw: int) -> torch.Tensor:
        if (gh, gw) == (self.grid, self.grid):
            return self.pos_embed
        cls, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid = grid.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], dim=1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"ViT: input {h}x{w} is not divisible by patch_size {self.patch_size}")
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1)
        tokens = tokens + self._pos(h // self.patch_size, w // self.patch_size)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------

ENCODERS: dict[str, type[ImageEncoder]] = {"smallcnn": SmallCNN, "resnet50": ResNet50, "vit": ViT}
# name -> the parameter whose input-channel dimension (dim 1) is the band count
FIRST_LAYER: dict[str, str] = {"smallcnn": "features.0.weight", "resnet50": "conv1.weight", "vit": "patch_embed.proj.weight"}


def make_encoder(name: str, in_bands: int, **kw: Any) -> ImageEncoder:
    """An image encoder by name (``smallcnn``, ``resnet50``, ``vit``) with ``in_bands`` input channels."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r} (choose from {', '.join(ENCODERS)})")
    return ENCODERS[key](in_bands, **kw)


# --------------------------------------------------------------------------------------------
# POI sets and the MMGR model
# --------------------------------------------------------------------------------------------


class POISetEncoder(nn.Module):
    """A set of POI category tokens -> one vector: embedding, then Set2Set or attention pooling.

    ``forward(tokens [T] int64, index [T] int64 (set of each token), num_sets) -> [num_sets, out_dim]``;
    empty sets give the pooling's value for no input (zeros for attention).
    """

    def __init__(self, num_tokens: int, emb_dim: int = 32, out_dim: int = 64, pooling: str = "set2set",
                 processing_steps: int = 3) -> None:
        super().__init__()
        from torch_geometric.nn.aggr import AttentionalAggregation, Set2Set

        self.embedding = nn.Embedding(num_tokens, emb_dim)
        if pooling == "set2set":
            self.pool: nn.Module = Set2Set(emb_dim, processing_steps=processing_steps)
            pooled = 2 * emb_dim
        elif pooling == "attention":
            self.pool = AttentionalAggregation(gate_nn=nn.Linear(emb_dim, 1),
                                               nn=nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.ReLU()))
            pooled = emb_dim
        else:
            raise ValueError(f"unknown POI pooling {pooling!r} (choose set2set or attention)")
        self.out = nn.Linear(pooled, out_dim)
        self.out_dim = out_dim

    def forward(self, tokens: torch.Tensor, index: torch.Tensor, num_sets: int) -> torch.Tensor:
        """``tokens [T]``, ``index [T]`` sorted ascending -> ``[num_sets, out_dim]``."""
        return self.out(self.pool(self.embedding(tokens), index=index, dim_size=num_sets))


class ProjectionHead(nn.Module):
    """Linear → ReLU → Linear (SimCLR projection), ``[B, in_dim] -> [B, out_dim]``."""

    def __init__(self, in_dim: int, out_dim: int = 64, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or in_dim
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MMGRModel(nn.Module):
    """Image encoder + POI-set encoder with projection heads into one contrastive space (MMGR)."""

    def __init__(self, image_encoder: ImageEncoder, poi_encoder: POISetEncoder, proj_dim: int = 64) -> None:
        super().__init__()
        self.image_encoder, self.poi_encoder = image_encoder, poi_encoder
        self.image_head = ProjectionHead(image_encoder.out_dim, proj_dim)
        self.poi_head = ProjectionHead(poi_encoder.out_dim, proj_dim)

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, proj_dim]``."""
        return self.image_head(self.image_encoder(x))

    def pois(self, tokens: torch.Tensor, index: torch.Tensor, num_sets: int) -> torch.Tensor:
        """POI sets -> ``[num_sets, proj_dim]``."""
        return self.poi_head(self.poi_encoder(tokens, index, num_sets))


# --------------------------------------------------------------------------------------------
# External checkpoints
# --------------------------------------------------------------------------------------------

STRIP_PREFIXES = ("module.", "encoder.", "backbone.", "model.")
NESTED_KEYS = ("state_dict", "model", "model_state", "encoder")
HEAD_PREFIXES = ("fc.", "head.", "heads.", "decoder", "mask_token", "projector.", "fc_norm.")


class BandMappedEncoder(ImageEncoder):
    """Wraps an encoder: picks its input channels from the raster's bands, ``[B, raster_bands, H, W] -> [B, out_dim]``."""

    band_indices: torch.Tensor  # buffer

    def __init__(self, encoder: ImageEncoder, band_indices: Sequence[int], in_bands: int) -> None:
        super().__init__(in_bands, encoder.out_dim)
        self.encoder = encoder
        self.register_buffer("band_indices", torch.as_tensor(list(band_indices), dtype=torch.long))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.index_select(1, self.band_indices))


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in NESTED_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state_dict checkpoint (expected a mapping of parameter name -> tensor, "
                         f"possibly under one of {', '.join(NESTED_KEYS)})")
    state = {}
    for key, value in obj.items():
        changed = True
        while changed:
            changed = False
            for prefix in STRIP_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        state[key] = value
    return state


def _resolve_band(value: int | str, band_roles: Sequence[str] | None, in_bands: int, channel: int) -> int:
    if isinstance(value, str) and not value.lstrip("-").isdigit():
        if band_roles is None or value not in band_roles:
            known = ", ".join(band_roles) if band_roles else "none given"
            raise ValueError(f"band map: encoder channel {channel} -> {value!r} is not a raster band role ({known})")
        return list(band_roles).index(value)
    index = int(value)
    if not 0 <= index < in_bands:
        raise ValueError(f"band map: encoder channel {channel} -> band index {index} outside 0..{in_bands - 1}")
    return index


def load_external_encoder(path: str | Path, arch: str, band_map: Mapping[Any, int | str], in_bands: int,
                          band_roles: Sequence[str] | None = None, **kw: Any) -> BandMappedEncoder:
    """An encoder built from a user-supplied state_dict, fed from the raster's bands by ``band_map``.

    ``band_map``: encoder input channel (0-based, an int or its decimal string) -> raster band, given as a role name from
    ``band_roles`` (the raster bands' order, e.g. the patch table's ``patch_bands``) or a 0-based
    index into the ``in_bands`` raster bands. Every encoder channel must be mapped. Keys prefixed
    ``module.`` / ``encoder.`` / ``backbone.`` / ``model.`` are stripped; classifier / decoder heads
    (``fc.``, ``head.`` …) are dropped. ``kw`` are the architecture's arguments (they must match the
    checkpoint). Raises ValueError with the offending key and shapes when the checkpoint does not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"external encoder checkpoint {path} not found")
    key = arch.lower().replace("-", "").replace("_", "")
    if key not in ENCODERS:
        raise ValueError(f"unknown encoder {arch!r} (choose from {', '.join(ENCODERS)})")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors of many types; one clear line
        raise ValueError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    state = _unwrap(raw, path)
    dropped = sorted(k for k in state if k.startswith(HEAD_PREFIXES))
    if dropped:
        log.info("external encoder: ignoring %d head parameter(s) (%s ...)", len(dropped), dropped[0])
    state = {k: v for k, v in state.items() if k not in dropped}
    first = FIRST_LAYER[key]
    if first not in state:
        raise ValueError(f"{path}: no {first!r} in the checkpoint: not a {arch} state_dict "
                         f"(keys start with {', '.join(sorted(state)[:3])} ...)")
    channels = int(state[first].shape[1])
    mapping = {int(k): v for k, v in band_map.items()}
    if sorted(mapping) != list(range(channels)):
        raise ValueError(f"band map covers encoder channels {sorted(mapping)}, but the checkpoint's first layer "
                         f"({first}, shape {tuple(state[first].shape)}) takes {channels} channel(s): map each of 0..{channels - 1}")
    indices = [_resolve_band(mapping[c], band_roles, in_bands, c) for c in range(channels)]
    encoder = ENCODERS[key](channels, **kw)
    own = encoder.state_dict()
    # checkpoints without our normalisation buffers keep identity normalisation
    for buf in ("band_mean", "band_std"):
        state.setdefault(buf, own[buf])
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and v.shape != own[k].shape]
    if mismatched:
        name, got, want = mismatched[0]
        raise ValueError(f"{path}: parameter {name} has shape {got} in the checkpoint but {want} in {arch}"
                         f"({', '.join(f'{k}={v}' for k, v in kw.items())}) — {len(mismatched)} mismatch(es); "
                         f"pass the architecture arguments the checkpoint was trained with")
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not match {arch}: {len(missing)} missing "
                         f"({', '.join(missing[:3])}) and {len(unexpected)} unexpected ({', '.join(unexpected[:3])}) parameter(s)")
    encoder.load_state_dict(state)
    return BandMappedEncoder(encoder, indices, in_bands)
