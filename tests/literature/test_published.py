"""The shipped published results: same numbers as the literals they replaced, cited, and checked on load."""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import pytest
import yaml

from landuse import literature
from landuse.errors import CorruptInputError
from landuse.evaluation import embeddings_benchmark as B
from landuse.evaluation import landuse_benchmark as L

# The literals that lived in landuse/training/*.py before the move, captured once: every consumer must
# still get exactly these numbers, in this order (the README tables quote them).
OLD_MH180 = (
    ("MVURE", "Zhang et al., IJCAI 2020", 0.64, 0.63, 0.78, 0.62),
    ("MGFN", "Wu et al., IJCAI 2022", 0.72, 0.72, 0.76, 0.58),
    ("HREP", "Zhou et al., AAAI 2023", 0.68, 0.75, math.nan, math.nan),
    ("HAFusion", "Sun et al., ICDE 2024", 0.734, 0.844, math.nan, math.nan),
)
OLD_TRACTS = (
    ("DGI", 0.224, 0.394, 0.919),
    ("RegionDCL", 0.239, 0.424, 0.913),
    ("Transformer", 0.251, math.nan, math.nan),
    ("Urban2Vec", 0.291, math.nan, math.nan),
    ("Doc2Vec", 0.312, math.nan, math.nan),
    ("Place2Vec", 0.322, math.nan, math.nan),
    ("GAE", 0.363, math.nan, math.nan),
)


def same(a: tuple, b: tuple) -> bool:
    """Tuples equal, NaN equal to NaN."""
    return len(a) == len(b) and all(x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
                                    for x, y in zip(a, b))


def test_mh180_consumers_get_the_old_numbers() -> None:
    got = [(p.method, p.citation, p.crime_r2, p.checkin_r2, p.nmi, p.ari) for p in B.published()]
    assert len(got) == len(OLD_MH180) and all(same(g, o) for g, o in zip(got, OLD_MH180))


def test_tract_consumers_get_the_old_numbers() -> None:
    got = [(p.method, p.kl, p.l1_sum, p.cosine) for p in L.nyc_tracts_published()]
    assert len(got) == len(OLD_TRACTS) and all(same(g, o) for g, o in zip(got, OLD_TRACTS))


def test_every_entry_says_where_it_comes_from() -> None:
    for key in ("nyc_mh180", "nyc_ct2020_landuse"):
        bench = literature.benchmark(key)
        assert bench.title and bench.protocol and bench.source and bench.metrics
        for r in bench.results:
            assert r.citation and r.paper and r.table and set(r.values) == set(bench.metrics)
    with pytest.raises(KeyError, match="no published results"):
        literature.benchmark("nowhere")


def shipped() -> dict:
    """The shipped file as plain YAML, to damage in the tests below."""
    return yaml.safe_load(resources.files("landuse.literature").joinpath(literature.FILE).read_text(encoding="utf-8"))


@pytest.mark.parametrize("damage, message", [
    (lambda d: d["nyc_mh180"]["results"][0]["values"].update(crime_r2="high"), "must be a finite number"),
    (lambda d: d["nyc_mh180"]["results"][0]["values"].update(crime_r2=True), "must be a finite number"),
    (lambda d: d["nyc_mh180"]["results"][1]["values"].update(r2=0.5), "unknown metric 'r2'"),
    (lambda d: d["nyc_mh180"]["results"][2].pop("citation"), "needs exactly the keys"),
    (lambda d: d["nyc_ct2020_landuse"].pop("source"), "needs exactly the keys"),
    (lambda d: d["nyc_ct2020_landuse"]["results"].append(d["nyc_ct2020_landuse"]["results"][0]), "duplicate method"),
    (lambda d: d["nyc_mh180"].update(results=[]), "non-empty list"),
])
def test_malformed_file_is_one_line_error(tmp_path: Path, damage, message: str) -> None:
    data = shipped()
    damage(data)
    path = tmp_path / "published.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(CorruptInputError, match=message) as info:
        literature.load(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_unreadable_file_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "published.yaml"
    path.write_text("nyc_mh180: [unclosed\n")
    with pytest.raises(CorruptInputError, match="unreadable published results") as info:
        literature.load(path)
    assert "\n" not in str(info.value)
    with pytest.raises(CorruptInputError, match="unreadable"):
        literature.load(tmp_path / "missing.yaml")
