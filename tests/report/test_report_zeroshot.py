"""The report's zero-shot section: maps beside the supervised one and the comparison numbers.

The work dir is the one of ``test_report`` plus ``tables/zeroshot_<method>`` written with the
producer's own :func:`landuse.zeroshot.run.zeroshot_table`; the expected numbers are computed here
by hand from the Parquet tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from tests.report.test_report import (
    CLASSES,
    LOAD_HOOK,
    Page,
    browser,
    check_images,
    check_self_contained,
    make_config,
    make_work_dir,
    run_browser,
    write_table,
)

UNSCORED = (100, 105, 106, 117)  # region ids the text method did not score (100 is also unlabelled)


def add_zeroshot(work: Path, method: str, *, copy_supervised: bool = False) -> pd.DataFrame:
    """Write ``tables/zeroshot_<method>``: half the regions agree with the supervised arg-max
    (same distribution), the rest random; ``copy_supervised``: all equal to the supervised ones."""
    from landuse.zeroshot.run import zeroshot_table

    preds = pq.read_table(work / "tables" / "predictions").to_pandas()
    ids = preds["region_id"].to_numpy(np.int64)
    probs = np.random.default_rng(11).dirichlet(np.ones(len(CLASSES)), size=len(ids))
    same = np.ones(len(ids), bool) if copy_supervised else np.arange(len(ids)) % 2 == 0
    probs[same] = preds[CLASSES].to_numpy(np.float64)[same]
    scored = np.ones(len(ids), bool) if copy_supervised else ~np.isin(ids, UNSCORED)
    table = zeroshot_table(ids, probs, scored, CLASSES)
    write_table(work / "tables", f"zeroshot_{method}", table,
                {"stage": "zeroshot", "method": method, "classes": CLASSES,
                 "counts": {"regions": len(ids), "scored": int(scored.sum()), "rejected": int((~scored).sum())}})
    return table


def expected(work: Path, method: str) -> dict[str, str]:
    """The comparison cells, computed by hand (numpy arg-max, no report code)."""
    tables = work / "tables"
    sup = pq.read_table(tables / "predictions").to_pandas().set_index("region_id")
    zs = pq.read_table(tables / f"zeroshot_{method}").to_pandas().set_index("region_id")
    zs = zs[zs["scored"]]
    both = sup.index.intersection(zs.index)
    p, q = sup.loc[both, CLASSES].to_numpy(), zs.loc[both, CLASSES].to_numpy()
    out = {"scored": f"{len(zs)} / {len(sup)}", "both": str(len(both)),
           "agree": f"{100 * (p.argmax(1) == q.argmax(1)).mean():.1f}%",
           "l1": f"{np.abs(p - q).sum(1).mean():.4f}"}
    if (tables / "labels").is_dir():
        labels = pq.read_table(tables / "labels").to_pandas().set_index("region_id")
        labels = labels[(labels["coverage"] > 0) & (labels[CLASSES].sum(1) > 0)]
        common = both.intersection(labels.index)
        truth = labels.loc[common, CLASSES].to_numpy().argmax(1)
        out["labelled"] = str(len(common))
        out["acc_zs"] = f"{100 * (zs.loc[common, CLASSES].to_numpy().argmax(1) == truth).mean():.1f}%"
        out["acc_sup"] = f"{100 * (sup.loc[common, CLASSES].to_numpy().argmax(1) == truth).mean():.1f}%"
    return out


def build(tmp_path: Path, repo_root: Path, methods: dict[str, bool], optional: bool = True) -> tuple[Path, Path]:
    from landuse.report.html import build_report

    work = tmp_path / "work"
    make_work_dir(work, optional=optional)
    for method, copy in methods.items():
        add_zeroshot(work, method, copy_supervised=copy)
    return work, build_report(make_config(repo_root, work), tmp_path / "report").path


def test_zeroshot_maps_and_comparison(tmp_path: Path, repo_root: Path) -> None:
    work, path = build(tmp_path, repo_root, {"text": False, "llm": True})
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    check_self_contained(text, page)
    # the four figures of the report without zero-shot + one side-by-side map per method
    assert len(check_images(page)) == 6
    names = {p.name for p in path.parent.glob("*.png")}
    assert {"dominant_zeroshot_text.png", "dominant_zeroshot_llm.png", "dominant_true_vs_predicted.png"} <= names
    assert 'id="zeroshot"' in text and 'href="#zeroshot"' in text
    visible = page.visible()
    assert "Zero-shot vs supervised" in visible
    assert "zero-shot (text, no labels used)" in visible and "zero-shot (llm, no labels used)" in visible
    assert "not scored" in visible

    text_cells = expected(work, "text")
    assert text_cells["scored"] == "21 / 25" and text_cells["both"] == "21" and text_cells["labelled"] == "19"
    # one row: zero-shot regions scored, regions both scored, dominant agreement, mean L1
    assert f"{text_cells['scored']} {text_cells['both']} {text_cells['agree']} {text_cells['l1']}" in visible
    assert (f"zero-shot (text, no labels used) {text_cells['labelled']} {text_cells['acc_zs']} "
            f"supervised {text_cells['labelled']} {text_cells['acc_sup']}") in visible

    llm_cells = expected(work, "llm")  # a copy of the supervised distributions: full agreement, L1 0
    assert (llm_cells["agree"], llm_cells["l1"]) == ("100.0%", "0.0000")
    assert "25 / 25 25 100.0% 0.0000" in visible
    assert (f"zero-shot (llm, no labels used) {llm_cells['labelled']} {llm_cells['acc_sup']} "
            f"supervised {llm_cells['labelled']} {llm_cells['acc_sup']}") in visible


def test_zeroshot_without_labels(tmp_path: Path, repo_root: Path) -> None:
    work, path = build(tmp_path, repo_root, {"image": False}, optional=False)
    page = Page(path.read_text())
    assert len(check_images(page)) == 3  # predicted dominant, entropy, supervised vs zero-shot image
    visible = page.visible()
    cells = expected(work, "image")
    assert f"{cells['scored']} {cells['both']} {cells['agree']} {cells['l1']}" in visible
    assert "zero-shot (image, no labels used)" in visible and "no accuracy against true land use" in visible
    assert "dominant-class accuracy vs labels" not in visible


def test_no_zeroshot_table_no_section(tmp_path: Path, repo_root: Path) -> None:
    _, path = build(tmp_path, repo_root, {})
    text = path.read_text()
    assert 'id="zeroshot"' not in text and "zero-shot" not in text.lower()
    assert not list(path.parent.glob("dominant_zeroshot_*.png"))


def test_zeroshot_table_missing_classes_is_listed(tmp_path: Path, repo_root: Path) -> None:
    from landuse.report.html import build_report

    work = tmp_path / "work"
    make_work_dir(work, optional=False)
    table = add_zeroshot(work, "text").drop(columns=[CLASSES[0]])
    write_table(work / "tables", "zeroshot_text", table, {"stage": "zeroshot"})
    visible = Page(build_report(make_config(repo_root, work), tmp_path / "report").path.read_text()).visible()
    assert f"zero-shot text: table zeroshot_text lacks column(s) {CLASSES[0]}" in visible
    assert "landuse run zeroshot --method text" in visible


def test_zeroshot_report_renders_in_headless_chromium(tmp_path: Path, repo_root: Path) -> None:
    exe = browser()
    _, path = build(tmp_path, repo_root, {"text": False})
    probe = tmp_path / "probe.html"
    probe.write_text(path.read_text().replace("</body>", LOAD_HOOK + "</body>"))
    dom = run_browser(exe, "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = next(attrs for tag, attrs in Page(dom.stdout).tags if tag == "body")
    assert body.get("data-images") == "5" and body.get("data-broken") == "0", body
