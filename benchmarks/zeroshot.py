"""Zero-shot land use (method ``text``) vs the majority class and the supervised champion, on labelled regions.

Usage::

    PYTHONPATH=src python benchmarks/zeroshot.py --config conf/nyc_manhattan.yaml [--model URI | --no-model]
        [--track] [--set key=value ...]

Runs ``landuse run zeroshot --method text`` on the config's work dir (its ``poi_counts``, ``regions``
and ``labels`` tables must exist: ``landuse pipeline --config ...`` first) and scores, on the
labelled regions the text method scored (regions with POIs; rejected ones are counted, not scored):

* ``text`` — the method as shipped: softmax(cos(paragraph, class text) / temperature);
* ``text_centred`` — the same similarities with each class's mean over all scored regions
  subtracted before the softmax (label-free calibration against class texts that are close to
  every paragraph; computed exactly from the text method's probabilities);
* ``majority`` — every region gets the most frequent dominant class of the labelled regions,
  probability 1 (for KL the one-hot is smoothed: 1e-12 elsewhere, as the metric clips);
* ``prior`` — every region gets the mean label distribution (the best constant for KL/L1);
* ``supervised`` — when a model is registered: ``models:/<training.registered_model>@champion``
  through the served pyfunc on the region table of ``node_features``. It was trained on (most of)
  these very labels: an in-sample, optimistic reference, not a held-out score. When the version's
  run kept its split (``model_split.json``), every row is also scored on that split's TEST regions,
  which the model never trained on: the fair comparison.

Metrics: dominant-class accuracy, macro-F1, KL, L1 (sum over classes), cosine
(:func:`landuse.zeroshot.run.label_metrics`). Ends with one ``key=value`` line; ``beats_majority=1``
when text's accuracy exceeds the majority baseline's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def centred(probs: np.ndarray) -> np.ndarray:
    """Per-class mean-centred softmax: log p − mean over rows of log p, renormalised (rows of ``probs``
    are softmax(s / T), so this equals softmax((s − class mean of s) / T))."""
    logp = np.log(np.clip(probs, 1e-300, 1.0))
    z = logp - logp.mean(axis=0, keepdims=True)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def constant(row: np.ndarray, n: int) -> np.ndarray:
    """``row`` repeated ``n`` times."""
    return np.repeat(row[None, :], n, axis=0)


def champion_test_ids(uri: str) -> np.ndarray | None:
    """Region ids of the test nodes of the split the registered version was selected on (its run's
    ``model_split.json``): regions whose labels the model never trained on. None when unknown."""
    import mlflow
    from mlflow.tracking import MlflowClient

    if not uri.startswith("models:/") or "@" not in uri:
        return None
    name, alias = uri.removeprefix("models:/").split("@", 1)
    try:
        version = MlflowClient().get_model_version_by_alias(name, alias)
        split = mlflow.artifacts.load_dict(f"runs:/{version.tags['run_id']}/model_split.json")
    except Exception:  # noqa: BLE001 - older versions carry no split: no held-out table
        return None
    return np.asarray(split["region_ids"], dtype=np.int64)[np.asarray(split["test"], dtype=np.int64)]


def supervised(config, uri: str, classes: list[str], ids: np.ndarray) -> np.ndarray | str:
    """[len(ids), C] predictions of the registered model, or a one-line reason why there are none."""
    from landuse.data.reader import load_graph
    from landuse.serving.pyfunc import load_region_model, table_for_graph
    from landuse.serving.predict import registered_model_missing
    from landuse.training.tracking import setup_mlflow

    setup_mlflow(config)
    missing = registered_model_missing(uri)
    if missing:
        return missing
    try:
        model, spec = load_region_model(uri)
    except Exception as exc:  # noqa: BLE001 - any failure means no supervised row, said in one line
        return f"cannot load {uri} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    if list(spec.classes) != classes:
        return f"{uri} predicts {list(spec.classes)}, not {classes}"
    graph = load_graph(config.tables_dir, classes=list(spec.classes), edges=spec.edge_sets)
    table = model.predict(table_for_graph(graph, spec)).set_index("region_id")
    absent = np.setdiff1d(ids, table.index.to_numpy())
    if absent.size:
        return f"{uri} scored no row for {absent.size} labelled regions"
    return table.loc[ids, classes].to_numpy(np.float64)


def print_table(rows: dict[str, dict[str, float] | str]) -> None:
    """The metrics of every row as a Markdown table."""
    head = f"| {'method':<58} | accuracy | macro-F1 |     KL | L1 (sum) | cosine |"
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for name, m in rows.items():
        if isinstance(m, str):
            print(f"| {name:<58} | not run: {m}")
            continue
        print(f"| {name:<58} | {m['accuracy']:8.3f} | {m['macro_f1']:8.3f} | {m['kl']:6.3f} | {m['l1_sum']:8.3f} | "
              f"{m['cosine']:6.3f} |")


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; print the table and one ``key=value`` line."""
    for key in ("DO_NOT_TRACK", "SCARF_NO_ANALYTICS", "MLFLOW_DISABLE_TELEMETRY"):
        os.environ.setdefault(key, "true")
    from landuse.config import load_config
    from landuse.logs import setup_logging
    from landuse.zeroshot.run import label_metrics, read_labels, run_zeroshot

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", required=True)
    parser.add_argument("--model", default=None,
                        help="MLflow model URI (default models:/<training.registered_model>@champion)")
    parser.add_argument("--no-model", action="store_true", help="skip the supervised row")
    parser.add_argument("--track", action="store_true", help="also log the zeroshot run to MLflow")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides)
    setup_logging("WARNING")

    start = time.perf_counter()
    result = run_zeroshot(config, "text", track=args.track)
    seconds = time.perf_counter() - start
    classes = list(result.prompts.classes)
    labels = read_labels(config, classes)
    if labels is None:
        print(f"zeroshot benchmark: {config.name}: no labels table with the classes {classes}")
        print(f"config={config.name} ok=0 reason=no_labels")
        return 1
    table = result.table.set_index("region_id")
    ids, y = labels
    known = np.isin(ids, table.index.to_numpy())
    ids, y = ids[known], y[known]
    scored = table.loc[ids, "scored"].to_numpy(bool)
    ids_s, y_s = ids[scored], y[scored]
    text = table.loc[ids_s, classes].to_numpy(np.float64)
    all_scored = table[table["scored"]][classes].to_numpy(np.float64)
    centred_all = centred(all_scored)  # class means over every scored region, labelled or not
    position = {rid: i for i, rid in enumerate(table[table["scored"]].index.to_numpy())}
    text_centred = centred_all[[position[r] for r in ids_s]]
    majority_k = int(np.bincount(y.argmax(1), minlength=len(classes)).argmax())
    majority = constant(np.eye(len(classes))[majority_k], len(ids_s))
    prior = constant(y.mean(axis=0), len(ids_s))

    rows: dict[str, dict[str, float] | str] = {
        "text": label_metrics(text, y_s),
        "text_centred": label_metrics(text_centred, y_s),
        f"majority ({classes[majority_k]})": label_metrics(majority, y_s),
        "prior (mean label)": label_metrics(prior, y_s),
    }
    test_rows: dict[str, dict[str, float] | str] = {}
    held = np.zeros(len(ids_s), dtype=bool)
    if not args.no_model:
        uri = args.model or f"models:/{config.training.registered_model}@champion"
        pred = supervised(config, uri, classes, ids_s)
        rows[f"supervised ({uri}, in-sample)"] = pred if isinstance(pred, str) else label_metrics(pred, y_s)
        test_ids = None if isinstance(pred, str) else champion_test_ids(uri)
        if test_ids is not None:  # the same table on the regions the champion never trained on
            held = np.isin(ids_s, test_ids)
            test_rows = {"text": label_metrics(text[held], y_s[held]),
                         "text_centred": label_metrics(text_centred[held], y_s[held]),
                         f"majority ({classes[majority_k]})": label_metrics(majority[held], y_s[held]),
                         "prior (mean label)": label_metrics(prior[held], y_s[held]),
                         f"supervised ({uri}, held-out test regions)": label_metrics(pred[held], y_s[held])}

    usage = result.manifest["usage"]
    print(f"zeroshot benchmark: {config.name}: {len(table)} regions, {len(ids)} labelled, {len(ids_s)} labelled and "
          f"scored by text ({len(ids) - len(ids_s)} labelled without POIs); text model {usage.get('model')}, "
          f"level {config.zeroshot.level}, temperature {config.zeroshot.temperature}, {seconds:.1f} s")
    print_table(rows)
    if test_rows:
        print(f"\non the champion's test regions ({int(held.sum())} labelled and scored; never in its training loss):")
        print_table(test_rows)
    t, maj = rows["text"], rows[f"majority ({classes[majority_k]})"]
    sup = next((m for k, m in rows.items() if k.startswith("supervised") and not isinstance(m, str)), None)
    parts = {"config": config.name, "labelled_scored": len(ids_s), "text_accuracy": f"{t['accuracy']:.4f}",
             "text_centred_accuracy": f"{rows['text_centred']['accuracy']:.4f}",
             "majority_accuracy": f"{maj['accuracy']:.4f}", "text_macro_f1": f"{t['macro_f1']:.4f}",
             "majority_macro_f1": f"{maj['macro_f1']:.4f}", "text_kl": f"{t['kl']:.4f}",
             "supervised_accuracy": f"{sup['accuracy']:.4f}" if sup else "nan",
             **({f"test_{k.split(' ')[0]}_accuracy": f"{m['accuracy']:.4f}" for k, m in test_rows.items()
                 if not isinstance(m, str)}),
             "beats_majority": int(t["accuracy"] > maj["accuracy"]), "seconds": f"{seconds:.1f}"}
    print(" ".join(f"{k}={v}" for k, v in parts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
