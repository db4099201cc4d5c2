"""Unit tests of the generator's parts: class maps, vocabularies, scales, POI biases, trip model, writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from landuse.constants import LANDUSE_CLASSES, PROFILES, SCALES
from landuse.synth import default_class_map_dir
from landuse.synth.classmap import load_class_map
from landuse.synth.landuse_map import CLS, build_latent_map
from landuse.synth.pois import poi_cell_weights, sample_pois
from landuse.synth.profiles import PROFILE_SPECS, get_profile
from landuse.synth.raster import DN_OFFSET, DN_SCALE, nodata_mask, to_dn
from landuse.synth.scales import SCALE_SPECS, get_scale
from landuse.synth.trips import DAYS, PURPOSES, candidate_sets, hourly_profiles, slot_counts
from landuse.synth.writers import ChunkedLineWriter, encode_lines, fixed_decimal, quote_if_needed


# --------------------------------------------------------------------------- class maps and vocabularies


@pytest.mark.parametrize("profile", PROFILES)
def test_class_maps_cover_every_class_and_the_profile_cover_codes(profile: str) -> None:
    spec = get_profile(profile)
    class_map = load_class_map(default_class_map_dir() / spec.classmap_file)
    assert {LANDUSE_CLASSES[k] for k in class_map.classes} == set(LANDUSE_CLASSES)
    for kind, codes in spec.cover_codes.items():
        for code in codes:
            assert LANDUSE_CLASSES[class_map.class_of(code)] == "non_construction", (kind, code)
    if profile == "shenzhen":
        assert class_map.class_of("0501") == CLS["commercial"] and class_map.class_of("0701") == CLS["residential"]
        assert class_map.class_of("08H2") == CLS["public_service"] and class_map.class_of("1004") == CLS["transport"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("code,name,landuse_class\n0501,x,shops\n", "unknown class"),
        ("code,name,landuse_class\n" + "".join(f"{i},x,{c}\n" for i, c in enumerate(LANDUSE_CLASSES))
         + "0,y,commercial\n", "repeats code"),
        ("code,name,landuse_class\n0501,x,commercial\n", "no code for class"),
        ("code,landuse_class\n0501,commercial\n", "lacks column"),
    ],
)
def test_class_map_validation(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "map.csv"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_class_map(path)


@pytest.mark.parametrize("profile", PROFILES)
def test_poi_vocabulary_is_a_consistent_hierarchy(profile: str) -> None:
    categories = get_profile(profile).poi_categories
    codes = [c.code for c in categories]
    assert len(set(codes)) == len(codes)
    width = 6 if profile == "shenzhen" else 8
    assert all(len(code) == width and code.isdigit() for code in codes)
    level_of_prefix: dict[str, set[str]] = {}
    for cat in categories:
        assert len(cat.levels) == 3 and all(cat.levels) and cat.stems
        assert cat.affinity and set(cat.affinity) <= set(LANDUSE_CLASSES)
        level_of_prefix.setdefault(cat.code[:2], set()).add(cat.levels[0])
        level_of_prefix.setdefault(cat.code[:4], set()).add(cat.levels[1])
    assert all(len(names) == 1 for names in level_of_prefix.values())
    # every class can host some POI category
    affinity = np.stack([c.affinity_vector() for c in categories])
    assert (affinity.sum(axis=0) > 0).all()


def test_scales_meet_their_targets() -> None:
    assert tuple(SCALE_SPECS) == SCALES
    for spec in SCALE_SPECS.values():
        assert spec.extent_m % spec.grid_m == 0 and spec.grid_m % spec.cell_m == 0
    tiny, small, large = get_scale("tiny"), get_scale("small"), get_scale("large")
    assert tiny.n_grid**2 == 400 and 40 <= tiny.n_docks <= 100
    assert 1_800 <= small.n_grid**2 <= 2_500 and 1_500 <= small.n_docks <= 2_500
    assert min(large.n_grid**2, large.n_docks) >= 10_000
    assert large.n_pois >= 1_000_000 and large.n_trips >= 10_000_000
    assert large.k == 64 and large.chunk_rows <= 1_000_000
    with pytest.raises(ValueError, match="unknown synthetic scale"):
        get_scale("xl")


# --------------------------------------------------------------------------- POI biases


@pytest.fixture(scope="module")
def latent():
    profile, scale = PROFILE_SPECS["london"], get_scale("small")
    return build_latent_map(profile, scale, 0.0, float(scale.extent_m), np.random.default_rng(5))


def test_pois_keep_the_failure_modes_of_real_pois(latent) -> None:
    profile = PROFILE_SPECS["london"]
    weight = poi_cell_weights(latent, np.random.default_rng(1)).reshape(latent.classes.shape)
    res = weight[latent.classes == CLS["residential"]]
    com = weight[latent.classes == CLS["commercial"]]
    assert np.median(com) > 10 * np.median(res)  # much denser in the commercial cores
    assert (res < 0.1 * np.median(res)).mean() > 0.15  # estates with almost no POIs

    pois = sample_pois(latent, profile, 50_000, np.random.default_rng(2))
    assert pois.n == 50_000
    in_park = pois.cell_class == CLS["green_space"]
    groups = np.array([c.levels[0] for c in profile.poi_categories])[pois.category]
    commercial_groups = np.isin(groups, ["Accommodation, eating and drinking", "Retail"])
    assert in_park.sum() > 100 and commercial_groups[in_park].mean() > 0.1  # cafés and kiosks in parks
    assert not np.isin(latent.cover[latent.cell_of(pois.x, pois.y)], [1, 2]).any()  # none in river or lake


# --------------------------------------------------------------------------- trip model


def test_candidate_sets_are_sparse_and_unique() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 10_000, size=(500, 2))
    attraction = rng.random(500)
    cand, dist, valid = candidate_sets(xy, attraction, k_near=48, k_hub=16)
    assert cand.shape == dist.shape == valid.shape == (500, 64)
    for i in range(0, 500, 37):
        chosen = cand[i][valid[i]]
        assert len(set(chosen.tolist())) == chosen.size
        assert np.allclose(dist[i], np.hypot(*(xy[cand[i]] - xy[i]).T), atol=1e-2)
    assert (cand[:, 0] == np.arange(500)).all()  # the nearest candidate is the region itself
    small_cand, _, _ = candidate_sets(xy[:10], attraction[:10], k_near=48, k_hub=16)
    assert small_cand.shape[0] == 10 and small_cand.max() < 10


def test_slot_counts_follow_the_week() -> None:
    counts = slot_counts(1_000_000, np.random.default_rng(0))
    assert counts.shape == (DAYS, 24, len(PURPOSES)) and counts.sum() == 1_000_000
    assert np.allclose(hourly_profiles().sum(axis=0), 1.0)
    am, pm, leisure = PURPOSES.index("commute_am"), PURPOSES.index("commute_pm"), PURPOSES.index("leisure_out")
    weekday, weekend = counts[:5], counts[5:]
    am_total, pm_total = weekday[..., am].sum(), weekday[..., pm].sum()
    assert weekday[:, 6:10, am].sum() == am_total and weekday[:, 7:10, am].sum() > 0.85 * am_total
    assert weekday[:, 16:20, pm].sum() == pm_total and weekday[:, 17:20, pm].sum() > 0.85 * pm_total
    assert weekend[..., leisure].mean() > 1.5 * weekday[..., leisure].mean()
    assert weekend[..., am].mean() < 0.2 * weekday[..., am].mean()


# --------------------------------------------------------------------------- writers and raster scale


def test_fixed_decimal_matches_printf() -> None:
    values = np.random.default_rng(3).normal(0, 200, 2_000)
    values[:4] = [0.0, -0.0000004, 114.06, -0.12]
    for ndigits in (1, 6):
        expected = [f"{v:.{ndigits}f}" for v in values]
        expected = [x[1:] if x.startswith("-") and float(x) == 0 else x for x in expected]  # no "-0.0"
        assert fixed_decimal(values, ndigits).to_pylist() == expected


def test_lines_are_quoted_only_where_needed_and_chunked(tmp_path: Path) -> None:
    names = quote_if_needed(pa.array(["Hyde Park Corner, Hyde Park", "Plain", 'say "hi"']), ",")
    assert names.to_pylist() == ['"Hyde Park Corner, Hyde Park"', "Plain", '"say ""hi"""']
    writer = ChunkedLineWriter(tmp_path / "parts", "a,b", chunk_rows=4)
    for start in range(0, 10, 3):
        ids = pa.array([str(i) for i in range(start, min(start + 3, 10))])
        writer.add(encode_lines([ids, "x"], ","))
    parts = writer.close()
    assert [rows for _, rows in parts] == [4, 4, 2]
    text = "".join(p.read_text().split("\n", 1)[1] for p, _ in parts)
    assert text == "".join(f"{i},x\n" for i in range(10))
    assert all(p.read_text().startswith("a,b\n") for p, _ in parts)


def test_dn_scale_and_nodata_mask() -> None:
    reflectance = np.array([0.0, 0.1, 0.35, -0.1])
    dn = to_dn(reflectance)
    assert dn.dtype == np.uint16 and (dn > 0).all()
    assert np.allclose(dn * DN_SCALE + DN_OFFSET, reflectance, atol=DN_SCALE)
    mask = nodata_mask(100, 100)
    assert mask[0].all() and mask[:, -1].all() and mask[10, 95] and not mask[50, 50]
    assert 0.05 < mask.mean() < 0.2
