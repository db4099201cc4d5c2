"""MLflow tracking and the model registry.

The tracking URI comes from the config (default: a SQLite store under the work dir; a remote or
Databricks URI works unchanged). Registry: models are registered under ``training.registered_model``
with a comparability key (city, data fingerprint, classes, features, protocol — see
:func:`comparability_key`); alias ``champion-<key>`` always points at the version with the lowest
validation KL of its key, and plain ``champion`` at the champion of one key (the registered model's
``champion_key`` tag: the first key registered, or the key :func:`promote` chose) — aliases and tags
only, never the deprecated stages. :func:`log_lineage` records the input tables as dataset inputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from landuse.config import Config
from landuse.constants import TELEMETRY_ENV

log = logging.getLogger(__name__)
CHAMPION = "champion"
VAL_KL_TAG = "val_kl"
KEY_TAG = "comparability_key"  # model version tag: the version's comparability key
KEY_PART_PREFIX = "key."  # model version tags key.<part>: the parts behind the key, compact JSON
KEY_PART_MAX_CHARS = 5000
CHAMPION_KEY_TAG = "champion_key"  # registered model tag: the key plain `champion` follows
CONVERGE_ROUNDS = 20
CONVERGE_PAUSE_S = 0.05
_ALIAS_KEY = re.compile(r"^[\w\-]{1,200}$")  # mlflow's alias rule is ^[\w\-]*$, at most 255 chars
_MLFLOW_TYPES = {"int64": "long", "long": "long", "int32": "integer", "int": "integer", "integer": "integer",
                 "int16": "integer", "int8": "integer", "double": "double", "float64": "double",
                 "float": "float", "float32": "float", "string": "string", "str": "string", "object": "string",
                 "bool": "boolean", "boolean": "boolean", "binary": "binary", "timestamp": "datetime",
                 "datetime64[ns]": "datetime"}


def setup_mlflow(config: Config) -> str:
    """Point MLflow at the config's tracking URI and experiment; returns the experiment id."""
    for key, value in TELEMETRY_ENV.items():
        os.environ.setdefault(key, value)
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(config.mlflow_uri)
    if config.mlflow.tracking_uri is None:
        mlflow.set_registry_uri(config.mlflow_uri)
        # the local store keeps its artifacts beside it, not in ./mlruns of whatever cwd the command ran in
        if mlflow.get_experiment_by_name(config.mlflow.experiment) is None:
            artifacts = (config.driver_dir / "mlartifacts").resolve()
            mlflow.create_experiment(config.mlflow.experiment, artifact_location=artifacts.as_uri())
    return mlflow.set_experiment(config.mlflow.experiment).experiment_id


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """Nested dict -> ``a.b.c`` keys with string values (MLflow params)."""
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    text = json.dumps(tree) if isinstance(tree, (list, tuple)) else str(tree)
    return {prefix.rstrip("."): text[:6000]}


def log_config(config: Config) -> None:
    """The resolved config as params, secrets redacted (batched: the REST API caps a call at 100 params)."""
    import mlflow

    params = list(flatten(config.redacted_dict()).items())
    for start in range(0, len(params), 100):
        mlflow.log_params(dict(params[start:start + 100]))


def log_curves(run_id: str, curves: dict[str, np.ndarray], prefix: str = "") -> None:
    """Per-epoch metric curves in batches (one ``log_batch`` per 1000 points)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client, now = MlflowClient(), int(time.time() * 1000)
    points = [Metric(f"{prefix}{name}", float(v), now, step) for name, values in curves.items()
              for step, v in enumerate(values) if np.isfinite(v)]
    for start in range(0, len(points), 1000):
        client.log_batch(run_id, metrics=points[start:start + 1000])


def log_table_artifacts(frames: dict[str, Any], directory: Path, markdown: dict[str, str] | None = None) -> list[Path]:
    """Write tables as CSV (and Markdown) into ``directory`` and log them to the active run."""
    import mlflow

    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for name, frame in frames.items():
        files.append(directory / f"{name}.csv")
        frame.to_csv(files[-1], index=False)
    for name, text in (markdown or {}).items():
        files.append(directory / f"{name}.md")
        files[-1].write_text(text)
    for file in files:
        mlflow.log_artifact(str(file))
    return files


def comparability_key(parts: Mapping[str, Any]) -> str:
    """Short stable hash of what makes validation KL comparable between model versions.

    ``parts`` is e.g. ``{"experiment", "city", "data", "classes", "features", "protocol"}``; the
    key is the first 12 hex chars of sha256 over its canonical JSON (sorted keys, compact, tuples
    as lists, nested mappings as dicts), so equal parts give equal keys across processes.
    """
    text = json.dumps(_canonical(parts), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def champion_alias(key: str) -> str:
    """The alias ``champion-<key>`` (valid MLflow alias: letters, digits, ``_``, ``-``; never ``v<N>``)."""
    if not _ALIAS_KEY.match(key or ""):
        raise ValueError(f"comparability key {key!r} must be letters, digits, '_' or '-' (at most 200 chars)")
    return f"{CHAMPION}-{key}"


def champion_val_kl(name: str) -> float | None:
    """Validation KL recorded on the version that ``champion`` points at, or None when there is none."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        version = MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    value = version.tags.get(VAL_KL_TAG)
    return float(value) if value is not None else None


def register_model(model_uri: str, name: str, val_kl: float, tags: dict[str, str], key: str,
                   key_parts: Mapping[str, Any]) -> tuple[str, bool]:
    """Register ``model_uri`` under ``name`` and make the aliases agree with the registry.

    The version is created with its tags in one call: ``tags``, ``val_kl`` (repr of the float),
    ``comparability_key`` = ``key`` and ``key.<part>`` = each of ``key_parts`` as compact JSON
    (at most 5000 chars). Then a convergent compare-and-set runs: the champion of a key is the
    version with the lowest val_kl among the versions of ``name`` tagged with that key (ties: lowest
    version number); alias ``champion-<key>`` is set to it, and plain ``champion`` to the champion
    of the registered model's ``champion_key`` tag (claimed by the first registration under the
    name; moved only by :func:`promote`). Each round reads the registry, writes the aliases that
    disagree, and repeats until a read made after the last write agrees (at most 20 rounds).

    Why this is safe with concurrent registrants: every registrant's last action is a read, after
    its last write, that agrees with the argmin of what it read. The last writer therefore saw
    every version created before its write, and every registrant whose version came later read
    the final aliases after its version existed and would have written had its version been
    better. So the final aliases are the argmins, whatever the interleaving.

    Integrity: the version also carries ``artifact_sha256`` — the sha256 of every file of the model's
    artifact directory as it is now, compact JSON (continued in ``artifact_sha256.1``… past 5000
    chars), which every landuse loader verifies before loading
    (:mod:`landuse.serving.integrity`). When the model's run recorded its artifacts at logging time
    and they differ now, registration is refused (ArtifactIntegrityError).

    Returns (version, whether it is the champion of its key).
    """
    from mlflow.tracking import MlflowClient

    from landuse.serving.integrity import VERSION_TAG, version_tags

    alias = champion_alias(key)
    all_tags = {str(k): str(v) for k, v in tags.items() if not str(k).startswith(VERSION_TAG)}
    all_tags.update(version_tags(_registered_digests(model_uri)))
    for part, value in key_parts.items():
        text = json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"), default=str)
        all_tags[f"{KEY_PART_PREFIX}{part}"] = text[:KEY_PART_MAX_CHARS]
    all_tags[VAL_KL_TAG] = repr(float(val_kl))
    all_tags[KEY_TAG] = key
    created = _create_version(model_uri, name, all_tags)
    version = str(created.version)
    winner = _converge(MlflowClient(), name, key)
    short = f"key {key[:6]}…"
    if winner is not None and winner[0] == version:
        log.info("registry: %s v%s (%s, val KL %.5f) is the new champion of its key (alias %s)",
                 name, version, short, val_kl, alias)
        return version, True
    log.info("registry: %s v%s (%s, val KL %.5f) does not beat the champion of its key (%s); alias %s unchanged",
             name, version, short, val_kl,
             "none" if winner is None else f"v{winner[0]}, val KL {winner[1]:.5f}", alias)
    return version, False


def _registered_digests(model_uri: str) -> dict[str, str]:
    """The sha256 of the model's artifacts now; ArtifactIntegrityError when its run recorded others at logging."""
    from landuse.serving.integrity import logged_model_record, model_digests, run_record, verify_digests

    digests = model_digests(model_uri)
    logged, runs = re.fullmatch(r"models:/(m-[0-9a-f]+)", model_uri), re.fullmatch(r"runs:/([^/]+)/(.+)", model_uri)
    recorded = (logged_model_record(logged[1]) if logged else
                (run_record(runs[1], runs[2]) if runs else None))
    if recorded is not None:  # logged by landuse: the artifacts must still be what was logged
        verify_digests(digests, recorded[0], model_uri, since="logging", action="register")
    return digests


def champions(name: str) -> list[dict[str, Any]]:
    """One row per comparability key registered under ``name``, plain ``champion``'s key first.

    Each row: ``key``, ``alias`` (``champion-<key>``), ``version`` (what the alias points at),
    ``val_kl``, ``parts`` (the key parts decoded from the ``key.*`` tags), ``versions`` (how many
    versions carry the key) and ``champion`` (whether plain ``champion`` follows this key).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        model, versions = _read_state(client, name)
    except MlflowException:  # no such registered model
        return []
    champion_key = model.tags.get(CHAMPION_KEY_TAG)
    by_version = {str(v.version): v for v in versions}
    rows = []
    for key in sorted({v.tags[KEY_TAG] for v in versions}):
        own = [v for v in versions if v.tags[KEY_TAG] == key]
        best = min(own, key=_rank)  # _best(versions, key); own is never empty
        alias = champion_alias(key)
        aliased = model.aliases.get(alias)
        chosen = by_version.get(str(aliased)) if aliased is not None else None
        chosen = chosen or best
        parts = {}
        for tag, text in chosen.tags.items():
            if tag.startswith(KEY_PART_PREFIX):
                try:
                    parts[tag[len(KEY_PART_PREFIX):]] = json.loads(text)
                except ValueError:  # truncated
                    parts[tag[len(KEY_PART_PREFIX):]] = text
        rows.append({"key": key, "alias": alias, "version": str(chosen.version), "val_kl": _val_kl(chosen),
                     "parts": parts, "versions": len(own), "champion": key == champion_key})
    rows.sort(key=lambda row: (not row["champion"], -int(row["version"])))
    return rows


def promote(name: str, version: str | int) -> str:
    """Point plain ``champion`` at ``version`` by hand and make its key the model's ``champion_key``.

    From then on registrations keep ``champion`` on the best version of that key (so promoting a
    version that is not its key's best lasts only until the next registration). Returns the key.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    chosen = client.get_model_version(name, str(version))
    key = chosen.tags.get(KEY_TAG)
    if not key:
        raise ValueError(f"{name} v{version} has no {KEY_TAG!r} tag (registered before comparability keys); "
                         "register it again to promote it")
    client.set_registered_model_tag(name, CHAMPION_KEY_TAG, key)
    client.set_registered_model_alias(name, CHAMPION, str(chosen.version))
    log.info("registry: %s v%s promoted by hand: plain %r now follows key %s", name, chosen.version, CHAMPION, key)
    _, versions = _read_state(client, name)
    best = _best(versions, key)
    if best is not None and str(best.version) != str(chosen.version):
        log.warning("registry: %s v%s is not the best of key %s (v%s is); the next registration moves %r to v%s",
                    name, chosen.version, key, best.version, CHAMPION, best.version)
    return key


def _canonical(value: Any) -> Any:
    """JSON-ready form of ``value``: mappings as string-keyed dicts, tuples/lists as lists, numpy scalars as numbers."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(v) for v in value), key=repr)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, PurePath):
        return str(value)
    return value


def _val_kl(version: Any) -> float:
    """A version's val_kl tag; non-finite or unreadable values rank last."""
    try:
        value = float(version.tags.get(VAL_KL_TAG))
    except (TypeError, ValueError):
        return math.inf
    return value if math.isfinite(value) else math.inf


def _best(versions: list[Any], key: str) -> Any | None:
    """The champion of ``key``: lowest val_kl, ties to the lowest version number."""
    own = [v for v in versions if v.tags.get(KEY_TAG) == key]
    return min(own, key=_rank) if own else None


def _rank(version: Any) -> tuple[float, int]:
    """Champion order: lowest val_kl, ties to the lowest version number."""
    return _val_kl(version), int(version.version)


def _read_state(client: Any, name: str) -> tuple[Any, list[Any]]:
    """The registered model (aliases, tags) and its complete versions (comparability key and val_kl tagged).

    Filtered client-side: the SQLite/SQL store accepts ``tags.<key> = '...'`` filters but other
    registries (Unity Catalog) do not, and one read serves every key this round needs.
    """
    model = client.get_registered_model(name)
    versions: list[Any] = []
    token = None
    escaped = name.replace("\\", "\\\\").replace("'", "\\'")
    while True:
        page = client.search_model_versions(f"name = '{escaped}'", page_token=token)
        versions.extend(v for v in page if v.tags.get(KEY_TAG) and VAL_KL_TAG in v.tags
                        and str(v.status) != "FAILED_REGISTRATION")
        token = page.token
        if not token:
            return model, versions


def _try_write(write: Any, *args: Any) -> bool:
    """Run one registry write; a failure (two registrants inserting the same alias row at once, a
    locked SQLite file) is logged and left to the next round, which re-reads and writes again."""
    from mlflow.exceptions import MlflowException

    try:
        write(*args)
        return True
    except MlflowException as exc:
        log.debug("registry: %s%s failed (retried next round): %s", getattr(write, "__name__", "write"), args, exc)
        return False


def _create_version(model_uri: str, name: str, tags: dict[str, str], attempts: int = 5) -> Any:
    """``mlflow.register_model`` with its tags, retried when concurrent creators collide (the failed
    insert was rolled back, so a retry cannot duplicate the version)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            return mlflow.register_model(model_uri, name, tags=tags)
        except MlflowException as exc:
            text = str(exc)
            transient = any(s in text for s in ("Giving up after", "database is locked", "UNIQUE constraint"))
            if not transient or attempt == attempts - 1:
                raise
            time.sleep(CONVERGE_PAUSE_S * (1 + random.random()) * (attempt + 1))
    raise AssertionError("unreachable")


def _converge(client: Any, name: str, key: str) -> tuple[str, float] | None:
    """Compare-and-set ``champion-<key>`` and plain ``champion`` until a read after the last write agrees.

    Returns (version, val_kl) of ``key``'s champion as last read, or None.
    """
    best = None
    for _ in range(CONVERGE_ROUNDS):
        model, versions = _read_state(client, name)
        best = _best(versions, key)
        targets = {champion_alias(key): best}
        champion_key = model.tags.get(CHAMPION_KEY_TAG)
        claimed = not champion_key and _try_write(client.set_registered_model_tag, name, CHAMPION_KEY_TAG, key)
        if claimed:
            # the first registration under the name claims plain `champion` for its key (two first
            # registrations at once: the last tag write wins, the next reads show it to both)
            champion_key = key
            log.info("registry: %s: plain %r now follows key %s (its first registration)", name, CHAMPION, key)
        if champion_key:
            targets[CHAMPION] = _best(versions, champion_key)
        stale = {alias: str(target.version) for alias, target in targets.items()
                 if target is not None and str(model.aliases.get(alias)) != str(target.version)}
        if not stale and not claimed:  # a read after our last write agrees
            return None if best is None else (str(best.version), _val_kl(best))
        for alias, version in stale.items():
            if _try_write(client.set_registered_model_alias, name, alias, version) and alias == CHAMPION:
                log.info("registry: %s plain %r -> v%s (champion of key %s)", name, CHAMPION, version, champion_key)
        time.sleep(CONVERGE_PAUSE_S * (1 + random.random()))
    log.warning("registry: %s: aliases of key %s still moving after %d rounds (concurrent registrations?); "
                "the last registrant fixes them", name, key, CONVERGE_ROUNDS)
    return None if best is None else (str(best.version), _val_kl(best))


def log_lineage(tables: Mapping[str, Any], manifests: Mapping[str, Mapping[str, Any] | None],
                context: str = "training") -> list[str]:
    """Log one MLflow dataset input per table on the active run: digest = the table's manifest fingerprint.

    ``tables`` maps a table name to its directory (a local path or a URI such as ``s3a://…``),
    ``manifests`` the same names to their manifest dicts (``fingerprint``, and ``schema``/``rows``
    when present). Tables without a fingerprint are skipped with a warning. The dataset is a
    :class:`~mlflow.data.meta_dataset.MetaDataset` (metadata only, nothing is read or uploaded)
    whose source is a local-file source for local paths, MLflow's artifact source for the schemes
    it knows (``s3://``, ``gs://``…) and a Spark path source otherwise (``s3a://``). Returns the
    names logged.
    """
    import mlflow
    from mlflow.data.meta_dataset import MetaDataset

    if mlflow.active_run() is None:
        raise RuntimeError("log_lineage needs an active MLflow run")
    logged = []
    for name, path in tables.items():
        manifest = manifests.get(name) or {}
        digest = manifest.get("fingerprint")
        if not digest:
            log.warning("lineage: table %s has no manifest fingerprint; not logged", name)
            continue
        # MetaDataset does not override the abstract Dataset.profile; Dataset is no ABC, so it instantiates
        dataset = MetaDataset(_dataset_source(path), name=name, digest=str(digest)[:36],  # type: ignore[abstract]
                              schema=_dataset_schema(manifest.get("schema")))
        input_tags = {k: str(manifest[k])[:500] for k in ("rows", "stage") if manifest.get(k) is not None}
        mlflow.log_input(dataset, context=context, tags=input_tags or None)
        logged.append(name)
    return logged


def _dataset_source(path: Any) -> Any:
    """An MLflow dataset source for a table directory (local path, known artifact URI, or any other URI)."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.spark_dataset_source import SparkDatasetSource
    from mlflow.exceptions import MlflowException

    text = str(path)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("", "file"):
        text = str(Path(text.removeprefix("file://")).resolve())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "can be interpreted in multiple ways" for local paths
        try:
            return resolve_dataset_source(text)
        except MlflowException:
            return SparkDatasetSource(path=text)  # s3a:// and friends: the path Spark reads


def _dataset_schema(schema: Any) -> Any | None:
    """The manifest's ``{column: dtype}`` as an MLflow Schema, or None when a type has no MLflow equivalent."""
    if not isinstance(schema, Mapping) or not schema:
        return None
    from mlflow.types import ColSpec, DataType, Schema, TensorSpec

    columns: list[ColSpec | TensorSpec] = []
    for column, dtype in schema.items():
        mapped = _MLFLOW_TYPES.get(str(dtype).lower())
        if mapped is None:
            return None
        columns.append(ColSpec(type=getattr(DataType, mapped), name=str(column)))
    return Schema(columns)


def plot_bands(series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: Path, title: str,
               xlabel: str, ylabel: str, marker: str | None = None) -> Path:
    """Lines with ±std bands, ``{label: (x, mean, std)}``, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for label, (x, mean, std) in series.items():
        ax.plot(x, mean, marker=marker, label=label)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_curves(curves: dict[str, Iterable[np.ndarray]], path: Path, title: str) -> Path:
    """Mean ± std training curves over splits as a PNG."""
    series = {}
    for name, runs in curves.items():
        stack = np.vstack(list(runs))
        series[name] = (np.arange(stack.shape[1]), np.nanmean(stack, 0), np.nanstd(stack, 0))
    return plot_bands(series, path, title, "epoch", "KL(y || y_hat)")
