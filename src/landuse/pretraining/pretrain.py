"""MMGR-style contrastive pretraining of an image encoder (image–image and image–POI NT-Xent).

Loss per batch = ``w_intra · NT-Xent(view₁, view₂) + w_inter · NT-Xent(view₁, POI set)`` with
temperature τ (defaults 0.5 / 0.5 / 0.5, as in MMGR). The inter-modal term uses only the batch's
tiles that contain POIs (at least two are needed, else the term is 0 for that batch). A batch of
one sample has no negatives: it is skipped (and counted). Every epoch draws its permutation and
augmentations from a generator seeded with ``(seed, epoch)``, so a run resumed from the checkpoint
of epoch k continues exactly as the uninterrupted run would (Adam, constant learning rate).
Checkpoints (model, optimiser, epoch, history, RNG state) go to ``checkpoint_dir/epoch-XXXX.pt``
after every epoch, written atomically; a new call resumes from the latest one. They hold tensors and
plain values only (state dicts, numbers, lists, dicts, tuples), read back with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
import torch.nn.functional as F

from landuse.data.augment import MultispectralAugment
from landuse.data.patches import token_batch
from landuse.models.encoders import MMGRModel

log = logging.getLogger(__name__)
CHECKPOINT_RE = re.compile(r"^epoch-(\d{4,})\.pt$")


class Tracker(Protocol):
    """What the loop needs from MLflow (the ``mlflow`` module itself fits)."""

    def log_metric(self, key: str, value: float, step: int | None = None) -> Any: ...


@dataclass(frozen=True)
class PretrainSettings:
    """Optimisation and loss settings of one pretraining run."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-6
    tau: float = 0.5
    w_intra: float = 0.5
    w_inter: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0 or self.tau <= 0:
            raise ValueError(f"pretrain settings: need epochs >= 0, batch_size >= 1, lr > 0, tau > 0; got {self}")
        if self.w_intra < 0 or self.w_inter < 0 or self.w_intra + self.w_inter == 0:
            raise ValueError(f"pretrain settings: weights must be >= 0 and not both 0; got w_intra={self.w_intra} w_inter={self.w_inter}")


def nt_xent(a: torch.Tensor, b: torch.Tensor, tau: float = 0.5) -> torch.Tensor:
    """NT-Xent (SimCLR) between paired rows of ``a`` and ``b`` ``[B, d]``, B >= 2.

    The 2B vectors are L2-normalised; for each of them the positive is its pair and the negatives
    are the other 2B − 2; the loss is the mean over all 2B anchors of
    ``−log(exp(s⁺/τ) / Σ_{k≠anchor} exp(s_k/τ))``.
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"nt_xent: expected two [B, d] tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    n = a.shape[0]
    if n < 2:
        raise ValueError("nt_xent: needs at least 2 pairs (a batch of 1 has no negatives)")
    z = F.normalize(torch.cat([a, b]), dim=1)
    sim = z @ z.t() / tau
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def latest_checkpoint(directory: Path | None) -> Path | None:
    """The checkpoint of the highest epoch in ``directory`` (None if none)."""
    if directory is None or not Path(directory).is_dir():
        return None
    found = [(int(m.group(1)), p) for p in Path(directory).iterdir() if (m := CHECKPOINT_RE.match(p.name))]
    return max(found)[1] if found else None


def _save(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated epoch-*.pt


def pretrain(
    model: MMGRModel,
    pixels: torch.Tensor,
    poi_tokens: Sequence[Sequence[int]],
    settings: PretrainSettings,
    augment: MultispectralAugment | None = None,
    checkpoint_dir: Path | None = None,
    tracker: Tracker | None = None,
    stop_after: int | None = None,
) -> list[float]:
    """Train ``model`` on tiles ``pixels [N, C, H, W]`` with per-tile POI token lists; returns the loss per epoch.

    The history covers every epoch so far, including those restored from ``checkpoint_dir``.
    ``stop_after``: stop once this epoch is finished (for interruption tests / time limits).
    ``tracker``: per-epoch ``pretrain_loss`` (plus the intra / inter parts and skipped batches).
    """
    if len(poi_tokens) != len(pixels):
        raise ValueError(f"pretrain: {len(pixels)} tiles but {len(poi_tokens)} POI token lists")
    augment = augment or MultispectralAugment()
    # what a resumed run must share with the checkpoint it continues (the augmentations included)
    run_settings = {**asdict(settings), "augment": asdict(augment)}
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    history: list[float] = []
    start = 0
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        found = latest_checkpoint(checkpoint_dir)
        if found is not None:
            state = torch.load(found, map_location="cpu", weights_only=True)  # tensors and plain containers only
            saved = state.get("settings", {})
            differs = {k: (saved.get(k), v) for k, v in run_settings.items() if k != "epochs" and saved.get(k) != v}
            if differs:
                raise ValueError(f"{found}: checkpoint was written with other settings {differs} "
                                 f"(use another --checkpoint-dir or the same settings)")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            history, start = list(state["history"]), int(state["epoch"])
            log.info("pretrain: resumed from %s (epoch %d)", found, start)
    has_pois = torch.tensor([len(t) > 0 for t in poi_tokens])
    fill = model.image_encoder.band_mean.to(pixels.device)  # dropped bands read as the band mean
    n = len(pixels)
    last = settings.epochs if stop_after is None else min(settings.epochs, stop_after)
    for epoch in range(start + 1, last + 1):
        model.train()
        gen = _epoch_generator(settings.seed, epoch)
        order = torch.randperm(n, generator=gen)
        total = intra_sum = inter_sum = 0.0
        counted = skipped = 0
        for first in range(0, n, settings.batch_size):
            idx = order[first:first + settings.batch_size]
            if len(idx) < 2:
                skipped += 1
                log.info("pretrain: epoch %d skips a batch of %d sample (NT-Xent needs negatives)", epoch, len(idx))
                continue
            x = pixels[idx]
            v1, v2 = augment(x, gen, fill), augment(x, gen, fill)
            z1, z2 = model.image(v1), model.image(v2)
            intra = nt_xent(z1, z2, settings.tau)
            with_pois = has_pois[idx]
            inter = torch.zeros((), dtype=intra.dtype)
            if settings.w_inter > 0 and int(with_pois.sum()) >= 2:
                sets = [poi_tokens[int(i)] for i in idx[with_pois]]
                tokens, index = token_batch(sets)
                inter = nt_xent(z1[with_pois], model.pois(tokens, index, len(sets)), settings.tau)
            loss = settings.w_intra * intra + settings.w_inter * inter
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            intra_sum += intra.item() * len(idx)
            inter_sum += inter.item() * len(idx)
            counted += len(idx)
        mean = total / counted if counted else float("nan")
        history.append(mean)
        log.info("pretrain: epoch %d/%d loss %.4f (%d samples, %d batch(es) skipped)", epoch, settings.epochs, mean, counted, skipped)
        if tracker is not None:
            tracker.log_metric("pretrain_loss", mean, step=epoch)
            tracker.log_metric("pretrain_loss_intra", intra_sum / max(counted, 1), step=epoch)
            tracker.log_metric("pretrain_loss_inter", inter_sum / max(counted, 1), step=epoch)
            tracker.log_metric("pretrain_skipped_batches", float(skipped), step=epoch)
        if checkpoint_dir is not None:
            _save(checkpoint_dir / f"epoch-{epoch:04d}.pt", {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                "history": history, "torch_rng": torch.get_rng_state(), "settings": run_settings,
            })
    model.eval()
    return history
