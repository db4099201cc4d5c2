"""Trips from a gravity model with distance decay over a sparse candidate set (never an N×N matrix).

Each region's candidate destinations are its ``k_near`` nearest regions plus its ``k_hub`` nearest
"hubs" (the strongest attractors), so long commutes into a CBD exist while the model stays O(N·k).
Purposes: commuting (home → work in the morning peak, work → home in the evening peak, weekdays),
leisure (home → shops/parks and back, through the day, more at weekends) and background travel.
Output is written slot by slot (one simulated hour at a time) through a chunked writer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.spatial import cKDTree

from landuse.constants import LANDUSE_CLASSES
from landuse.synth.profiles import ProfileSpec
from landuse.synth.scales import ScaleSpec
from landuse.synth.writers import ChunkedLineWriter, as_text, encode_lines, quote_if_needed

log = logging.getLogger("landuse.synth")

DAYS = 7
PURPOSES: tuple[str, ...] = ("commute_am", "commute_pm", "leisure_out", "leisure_return", "background")
# purpose -> (pair family, reversed): the evening commute replays home→work pairs backwards
_FAMILY = {"commute_am": (0, False), "commute_pm": (0, True), "leisure_out": (1, False),
           "leisure_return": (1, True), "background": (2, False)}
_DAY_SHARE = {  # trips per purpose per day, weekday vs weekend (weekday total 1.0)
    False: {"commute_am": 0.27, "commute_pm": 0.27, "leisure_out": 0.12, "leisure_return": 0.12, "background": 0.22},
    True: {"commute_am": 0.03, "commute_pm": 0.03, "leisure_out": 0.25, "leisure_return": 0.25, "background": 0.20},
}

SIGNALING_HEADER = "date,hour,o_grid,d_grid,count"
TFL_HEADER = ("Rental Id,Duration,Bike Id,End Date,EndStation Id,EndStation Name,Start Date,StartStation Id,"
              "StartStation Name")
TFL_DATE_FORMAT = "%d/%m/%Y %H:%M"
_FIRST_RENTAL_ID = 88_000_001
_MAX_DURATION_S = 6 * 3600


def hourly_profiles() -> np.ndarray:
    """(24, P) share of each purpose's daily trips per hour of day (columns sum to 1)."""
    hours = np.arange(24, dtype=np.float64)
    prof = np.zeros((24, len(PURPOSES)))
    prof[[6, 7, 8, 9], 0] = [0.12, 0.33, 0.38, 0.17]
    prof[[16, 17, 18, 19], 1] = [0.12, 0.36, 0.34, 0.18]
    prof[:, 2] = np.exp(-0.5 * ((hours - 12.5) / 3.0) ** 2) * ((hours >= 8) & (hours <= 21))
    prof[:, 3] = np.exp(-0.5 * ((hours - 17.0) / 3.0) ** 2) * ((hours >= 10) & (hours <= 23))
    prof[:, 4] = np.where(hours < 6, 0.15, np.where((hours == 6) | (hours == 23), 0.5, 1.0))
    return prof / prof.sum(axis=0, keepdims=True)


def slot_counts(n_trips: int, rng: np.random.Generator) -> np.ndarray:
    """(DAYS, 24, P) trip counts per day, hour and purpose, summing exactly to ``n_trips``."""
    hourly = hourly_profiles()
    weights = np.zeros((DAYS, 24, len(PURPOSES)))
    for day in range(DAYS):
        share = _DAY_SHARE[day >= 5]
        weights[day] = hourly * np.array([share[p] for p in PURPOSES])[None, :]
    return rng.multinomial(n_trips, (weights / weights.sum()).ravel()).reshape(weights.shape)


@dataclass(frozen=True)
class RegionMasses:
    """Gravity-model masses per region: residents, jobs, leisure attraction, general activity."""

    population: np.ndarray
    jobs: np.ndarray
    leisure: np.ndarray
    activity: np.ndarray


def region_masses(shares: np.ndarray, urban: np.ndarray, core: np.ndarray) -> RegionMasses:
    """Masses from each region's class shares (N, 8), urban intensity and core score at its centroid."""
    s = {name: shares[:, i] for i, name in enumerate(LANDUSE_CLASSES)}
    population = s["residential"] * (0.4 + urban) + 1e-3
    jobs = (3.0 * s["commercial"] + 1.2 * s["industrial"] + 1.5 * s["public_service"] + 0.3 * s["utilities"]
            + 0.2 * s["transport"]) * (1.0 + 2.0 * core) + 1e-3
    leisure = 2.5 * s["commercial"] * (1.0 + core) + 1.5 * s["green_space"] + 0.3 * s["public_service"] + 1e-3
    activity = population + jobs + 0.5 * leisure
    return RegionMasses(population, jobs, leisure, activity)


@dataclass(frozen=True)
class TripModel:
    """Sparse gravity model: candidate destinations and cumulative joint (origin, candidate) probabilities.

    Attributes:
        cand: (N, K) int32 candidate destination indices per origin region.
        dist: (N, K) float32 centroid distance in metres.
        cum: per pair family (commute, leisure, background), the (N*K,) cumulative distribution of
            drawing origin i and candidate slot r (flat index ``i * K + r``).
    """

    cand: np.ndarray
    dist: np.ndarray
    cum: tuple[np.ndarray, np.ndarray, np.ndarray]

    @property
    def k(self) -> int:
        """Candidates per region."""
        return int(self.cand.shape[1])

    def sample(self, family: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw ``size`` trips of a pair family: origin, destination, distance arrays."""
        cum = self.cum[family]
        pair = np.minimum(np.searchsorted(cum, rng.random(size), side="right"), cum.size - 1)
        origin, slot = np.divmod(pair, self.k)
        return origin, self.cand[origin, slot].astype(np.int64), self.dist[origin, slot]


def candidate_sets(xy: np.ndarray, attraction: np.ndarray, k_near: int, k_hub: int) -> tuple[np.ndarray, np.ndarray,
                                                                                         np.ndarray]:
    """(cand, dist, valid): k nearest regions plus the nearest strong attractors, duplicates masked out."""
    n = len(xy)
    k1 = min(k_near, n)
    dist_near, idx_near = cKDTree(xy).query(xy, k=k1)
    idx_near = np.asarray(idx_near).reshape(n, k1)
    dist_near = np.asarray(dist_near).reshape(n, k1)
    n_hubs = min(n, max(k_hub, int(np.ceil(0.02 * n))))
    hubs = np.argsort(-attraction, kind="stable")[:n_hubs]
    k2 = min(k_hub, n_hubs)
    if k2 == 0:
        return idx_near.astype(np.int32), dist_near.astype(np.float32), np.ones((n, k1), dtype=bool)
    _, local = cKDTree(xy[hubs]).query(xy, k=k2)
    idx_hub = hubs[np.asarray(local).reshape(n, k2)]
    dist_hub = np.hypot(*(xy[idx_hub] - xy[:, None, :]).transpose(2, 0, 1))
    duplicate = np.zeros((n, k2), dtype=bool)
    for j in range(k2):  # k2 ≤ 16 column passes; avoids an (N, k1, k2) temporary
        duplicate[:, j] = (idx_near == idx_hub[:, j : j + 1]).any(axis=1)
    cand = np.concatenate([idx_near, idx_hub], axis=1).astype(np.int32)
    dist = np.concatenate([dist_near, dist_hub], axis=1).astype(np.float32)
    valid = np.concatenate([np.ones((n, k1), dtype=bool), ~duplicate], axis=1)
    return cand, dist, valid


def build_trip_model(xy: np.ndarray, masses: RegionMasses, profile: ProfileSpec, scale: ScaleSpec) -> TripModel:
    """Production-constrained gravity model per family over the sparse candidate sets."""
    cand, dist, valid = candidate_sets(xy, masses.jobs + masses.leisure, scale.k_near, scale.k_hub)
    is_self = cand == np.arange(len(xy))[:, None]
    families = (
        (masses.population, masses.jobs, profile.commute_decay_m, profile.self_trip_weight[0]),
        (masses.population + 0.2 * masses.jobs, masses.leisure, profile.leisure_decay_m, profile.self_trip_weight[1]),
        (masses.activity, masses.activity, profile.background_decay_m, profile.self_trip_weight[2]),
    )
    cums = []
    for origin_mass, dest_mass, decay, self_weight in families:
        w = dest_mass[cand] * np.exp(-dist.astype(np.float64) / decay) * valid
        w = np.where(is_self, w * self_weight, w)
        row = w.sum(axis=1, keepdims=True)
        joint = np.where(row > 0, w / np.where(row > 0, row, 1.0), 0.0) * (origin_mass * (row[:, 0] > 0))[:, None]
        cum = np.cumsum(joint.ravel())
        cums.append(cum / cum[-1])
    return TripModel(cand=cand, dist=dist, cum=(cums[0], cums[1], cums[2]))


def _slot_rngs(seed_seq: np.random.SeedSequence) -> list[np.random.SeedSequence]:
    return seed_seq.spawn(DAYS * 24)


def _draw_slot(model: TripModel, counts: np.ndarray, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray,
                                                                                            np.ndarray, int]]:
    """Per purpose with trips in this slot: (origin, destination, distance, purpose index)."""
    drawn = []
    for p, purpose in enumerate(PURPOSES):
        if counts[p] == 0:
            continue
        family, reverse = _FAMILY[purpose]
        o, d, dist = model.sample(family, int(counts[p]), rng)
        drawn.append((d, o, dist, p) if reverse else (o, d, dist, p))
    return drawn


@dataclass
class TripSummary:
    """What a trip writer produced."""

    parts: list[tuple[Path, int]]
    rows: int
    trips: int


def write_signaling_od(out_dir: Path, model: TripModel, ids: np.ndarray, counts: np.ndarray, start: date,
                       seed_seq: np.random.SeedSequence, chunk_rows: int, progress: bool) -> TripSummary:
    """Hourly OD counts ``date,hour,o_grid,d_grid,count`` (rows sorted by date, hour, o, d; count > 0)."""
    writer = ChunkedLineWriter(out_dir, SIGNALING_HEADER, chunk_rows)
    n = len(ids)
    rows = trips = 0
    id_text = as_text(ids.astype(np.int64))
    for slot, ss in enumerate(_slot_rngs(seed_seq)):
        day, hour = divmod(slot, 24)
        drawn = _draw_slot(model, counts[day, hour], np.random.default_rng(ss))
        if not drawn:
            continue
        key = np.concatenate([o * n + d for o, d, _, _ in drawn])
        uniq, cnt = np.unique(key, return_counts=True)
        o, d = np.divmod(uniq, n)
        day_text = (start + timedelta(days=day)).isoformat()
        writer.add(encode_lines([day_text, str(hour), pc.take(id_text, pa.array(o)), pc.take(id_text, pa.array(d)),
                                 as_text(cnt)], ","))
        rows += uniq.size
        trips += int(cnt.sum())
        if progress and hour == 23:
            log.info("signaling OD: day %d/%d, %d rows so far", day + 1, DAYS, rows)
    return TripSummary(parts=writer.close(), rows=rows, trips=trips)


def _minute_labels(start: date, n_days: int) -> pa.Array:
    """``dd/mm/YYYY HH:MM`` for every minute of ``n_days`` days from ``start`` (lookup table)."""
    minutes = pd.date_range(pd.Timestamp(start), periods=n_days * 24 * 60, freq="min")
    return pa.array(minutes.strftime(TFL_DATE_FORMAT).to_numpy(dtype=object), type=pa.string())


def write_journeys(out_dir: Path, model: TripModel, stations: pd.DataFrame, counts: np.ndarray, start: date,
                   seed_seq: np.random.SeedSequence, chunk_rows: int, progress: bool) -> TripSummary:
    """TfL cycle-hire journey extract, one row per journey, in start-time order."""
    writer = ChunkedLineWriter(out_dir, TFL_HEADER, chunk_rows)
    id_text = as_text(stations["id"].to_numpy(np.int64))
    names = quote_if_needed(pa.array(stations["commonName"].to_numpy(dtype=object), type=pa.string()), ",")
    labels = _minute_labels(start, DAYS + 1)  # +1 day: journeys started on Sunday night end on Monday
    n_bikes = max(100, 14 * len(stations))
    # cruising speed (m/s, median) and its spread per purpose; leisure riders dawdle
    speed_median = np.array([3.4, 3.4, 2.6, 2.6, 3.0])
    speed_sigma = np.array([0.2, 0.2, 0.3, 0.3, 0.25])
    next_id = _FIRST_RENTAL_ID
    rows = 0
    for slot, ss in enumerate(_slot_rngs(seed_seq)):
        day, hour = divmod(slot, 24)
        rng = np.random.default_rng(ss)
        drawn = _draw_slot(model, counts[day, hour], rng)
        if not drawn:
            continue
        o = np.concatenate([x[0] for x in drawn])
        d = np.concatenate([x[1] for x in drawn])
        dist = np.concatenate([x[2] for x in drawn]).astype(np.float64)
        purpose = np.concatenate([np.full(x[0].size, x[3]) for x in drawn])
        m = o.size
        start_s = slot * 3600 + rng.integers(0, 3600, m)
        speed = speed_median[purpose] * np.exp(speed_sigma[purpose] * rng.standard_normal(m))
        detour = 1.25 + np.abs(rng.normal(0.0, 0.12, m))
        duration = 45.0 + dist * detour / speed
        round_trip = o == d  # docked back where it started: a ride in the park
        duration[round_trip] = 300.0 + rng.lognormal(np.log(1500.0), 0.6, int(round_trip.sum()))
        duration *= rng.lognormal(0.0, 0.12, m)
        duration = np.minimum(np.rint(duration), _MAX_DURATION_S).astype(np.int64)
        bike = rng.integers(1, n_bikes + 1, m)
        order = np.argsort(start_s, kind="stable")
        o, d, start_s, duration, bike = o[order], d[order], start_s[order], duration[order], bike[order]
        rental = np.arange(next_id, next_id + m, dtype=np.int64)
        next_id += m
        o_arr, d_arr = pa.array(o), pa.array(d)
        writer.add(encode_lines([
            as_text(rental), as_text(duration), as_text(bike),
            pc.take(labels, pa.array((start_s + duration) // 60)), pc.take(id_text, d_arr), pc.take(names, d_arr),
            pc.take(labels, pa.array(start_s // 60)), pc.take(id_text, o_arr), pc.take(names, o_arr),
        ], ","))
        rows += m
        if progress and hour == 23:
            log.info("journeys: day %d/%d, %d rows so far", day + 1, DAYS, rows)
    return TripSummary(parts=writer.close(), rows=rows, trips=rows)
