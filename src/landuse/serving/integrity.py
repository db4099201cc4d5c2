"""Artifact integrity of the MLflow models landuse logs: sha256 records at logging and registration,
verification before anything of an artifact runs.

Loading an MLflow "models from code" model RUNS its code file, and MLflow's own loaders unpickle
(``python_model.pkl`` through cloudpickle, other flavors' ``loader_module``). So a model is loaded
only from a private local copy of its artifacts that has been checked first:

1. **records** — when a model is logged (:func:`record_logged_model`), the sha256 of every file of its
   artifact directory goes into the run as tag ``landuse.artifact_sha256.<name>`` (compact JSON:
   ``{"model_id": ..., "files": {relative path: sha256}}``); when it is registered
   (:func:`landuse.training.tracking.register_model`) the same map goes into the model version as tag
   ``artifact_sha256`` (compact JSON ``{relative path: sha256}``). A record longer than
   :data:`TAG_CHUNK` characters continues in ``<tag>.1``, ``<tag>.2``… (registries differ in their
   tag value limits: the SQL store allows 8000 characters for run tags, other registries 5000).
2. **verification** (:func:`verified_model_dir`) — the artifacts are downloaded into a private
   temporary directory; every file must be a regular file whose sha256 equals the record (a missing,
   added or changed file is refused, naming the model version and the file); the ``MLmodel`` must
   describe landuse's loader and nothing else (only the ``python_function`` flavor, MLflow's
   models-from-code loader, no pickled ``python_model``, no ``code`` paths put on ``sys.path``, no
   ``*.pkl`` file, artifacts inside the directory) and the code file must be byte-identical to one
   that this landuse writes. Only then is the model loaded, from that directory, with MLflow's
   pickle deserialisation switched off (:func:`load_verified_pyfunc`).

URIs with a record: ``models:/NAME/VERSION`` and ``models:/NAME@ALIAS`` (the registry's tags; the
alias is pinned to its version first), ``runs:/RUN_ID/NAME`` and ``models:/<logged model id>`` (the
run's tag). Any other URI (a local path, an object-store URL) has no record and is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

VERSION_TAG = "artifact_sha256"  # model version tag: {relative path: sha256}
RUN_TAG_PREFIX = "landuse.artifact_sha256."  # run tag per logged model name: {"model_id", "files"}
TAG_CHUNK = 5000  # characters per tag value (the smallest limit among the registries we target)
CODE_LOADER = "mlflow.pyfunc.loaders.code_model"  # MLflow's models-from-code loader module
PICKLE_SUFFIXES = (".pkl", ".pickle", ".cloudpickle", ".joblib")
# written by MLflow's client into every download of models:/NAME/VERSION (model name and version), so
# its bytes are not the store's: left out of the records; check_loader requires it to hold only those
REGISTERED_META = "registered_model_meta"
_HASH_BLOCK = 1 << 20
_PINNED = re.compile(r"models:/([^/@]+)/(\d+)")
_ALIASED = re.compile(r"models:/([^/@]+)@([^/]+)")
_LOGGED = re.compile(r"models:/(m-[0-9a-f]+)")
_RUNS = re.compile(r"runs:/([0-9a-zA-Z]+)/(.+)")


class ArtifactIntegrityError(Exception):
    """A model's artifacts differ from what was recorded when it was logged / registered, or describe a
    loader that is not landuse's: the model is refused before any of its files run."""


# --- Digests -----------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_digests(directory: Path, where: str = "") -> dict[str, str]:
    """{relative POSIX path: sha256} of every file under ``directory`` but MLflow's top-level
    ``registered_model_meta``; ArtifactIntegrityError for a symlink or anything else that is not a
    regular file (its target would escape the check)."""
    directory = Path(directory)
    out: dict[str, str] = {}
    for root, dirs, files in os.walk(directory, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(root) / name
            rel = path.relative_to(directory).as_posix()
            if rel == REGISTERED_META:
                continue
            mode = path.lstat().st_mode
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise ArtifactIntegrityError(f"{where or directory}: artifact {rel} is not a regular file "
                                             "(a link or device); refusing to load")
            out[rel] = file_sha256(path)
    return dict(sorted(out.items()))


def compact(value: Any) -> str:
    """Compact, key-sorted JSON (what the tags hold)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def split_tag(tag: str, text: str, chunk: int = TAG_CHUNK) -> dict[str, str]:
    """``text`` as tags ``tag``, ``tag.1``, ``tag.2``… of at most ``chunk`` characters each."""
    parts = [text[i:i + chunk] for i in range(0, len(text), chunk)] or [""]
    return {(tag if i == 0 else f"{tag}.{i}"): part for i, part in enumerate(parts)}


def joined_tag(tags: Mapping[str, str], tag: str) -> str | None:
    """The text :func:`split_tag` wrote under ``tag`` (None when there is no such tag)."""
    if tag not in tags:
        return None
    text, i = tags[tag], 1
    while f"{tag}.{i}" in tags:
        text += tags[f"{tag}.{i}"]
        i += 1
    return text


# --- Records -----------------------------------------------------------------------------------------


def model_digests(model_uri: str) -> dict[str, str]:
    """{relative path: sha256} of the artifacts an MLflow model URI points at now (downloaded to a temp dir)."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="landuse-hash-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        return directory_digests(Path(local), model_uri)


def run_tag(name: str) -> str:
    """The run tag holding the record of the model logged as ``name``."""
    return f"{RUN_TAG_PREFIX}{name}"


def record_logged_model(info: Any, name: str) -> dict[str, str]:
    """Record the sha256 of every artifact of a just-logged model (MLflow ModelInfo) in its run.

    Tags ``landuse.artifact_sha256.<name>`` on the model's run (the active run when the ModelInfo
    names none); returns the digests.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    digests = model_digests(info.model_uri)
    run_id = getattr(info, "run_id", None)
    if not run_id:
        active = mlflow.active_run()
        if active is None:
            raise RuntimeError(f"model {info.model_uri} names no run and no MLflow run is active")
        run_id = active.info.run_id
    text = compact({"model_id": getattr(info, "model_id", None), "files": digests})
    client = MlflowClient()
    for key, value in split_tag(run_tag(name), text).items():
        client.set_tag(run_id, key, value)
    return digests


def run_record(run_id: str, name: str) -> tuple[dict[str, str], str | None] | None:
    """(digests, model id) recorded in a run for the model logged as ``name``; None when not recorded."""
    from mlflow.tracking import MlflowClient

    text = joined_tag(MlflowClient().get_run(run_id).data.tags, run_tag(name))
    if text is None:
        return None
    data = _decode(text, f"runs:/{run_id}/{name}")
    return dict(data.get("files") or {}), data.get("model_id")


def logged_model_record(model_id: str) -> tuple[dict[str, str], str] | None:
    """(digests, ``runs:/RUN/NAME``) recorded in the source run of a logged model; None when not recorded."""
    import mlflow

    logged = mlflow.get_logged_model(model_id)
    if not logged.source_run_id:
        return None
    found = run_record(logged.source_run_id, logged.name)
    if found is None or (found[1] and found[1] != model_id):  # the name was logged again in that run
        return None
    return found[0], f"runs:/{logged.source_run_id}/{logged.name}"


def version_tags(digests: Mapping[str, str]) -> dict[str, str]:
    """The model version tags that record ``digests`` (``artifact_sha256`` and its continuations)."""
    return split_tag(VERSION_TAG, compact(dict(digests)))


def registry_record(model_uri: str) -> tuple[dict[str, str], str, str]:
    """(recorded digests, the model's name for messages, the URI to download) of a model URI.

    ``models:/NAME@ALIAS`` is pinned to the version the alias points at now (named and downloaded as
    ``models:/NAME/VERSION``). ArtifactIntegrityError (one line) when the URI has no record.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    uri = model_uri.rstrip("/")
    aliased, pinned = _ALIASED.fullmatch(uri), _PINNED.fullmatch(uri)
    registered = aliased or pinned
    if registered:
        name = registered[1]
        try:
            version = (client.get_model_version_by_alias(name, registered[2]) if aliased
                       else client.get_model_version(name, registered[2]))
        except MlflowException:
            raise  # the caller's own one-line error names a missing name / alias / version
        where = f"models:/{name}/{version.version}"
        text = joined_tag(version.tags, VERSION_TAG)
        if text is None:
            raise ArtifactIntegrityError(f"{where}: registered without a sha256 record of its artifacts "
                                         f"(tag {VERSION_TAG}); refusing to load; register it again with this landuse")
        return _decode(text, where), where, where
    logged, runs = _LOGGED.fullmatch(uri), _RUNS.fullmatch(uri)
    if logged:
        found = logged_model_record(logged[1])
        if found is None:
            raise ArtifactIntegrityError(f"{uri}: its run holds no sha256 record of its artifacts; refusing to load")
        return found[0], uri, uri
    if runs:
        found_run = run_record(runs[1], runs[2])
        if found_run is None:
            raise ArtifactIntegrityError(f"{uri}: run {runs[1]} holds no sha256 record of model {runs[2]!r} "
                                         f"(tag {run_tag(runs[2])}); refusing to load")
        return found_run[0], uri, uri
    raise ArtifactIntegrityError(f"{model_uri}: no registry or run record of its artifacts' sha256; refusing to load "
                                 "(load models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/NAME)")


def _decode(text: str, where: str) -> dict:
    try:
        data = json.loads(text)
    except ValueError:
        raise ArtifactIntegrityError(f"{where}: its sha256 record is not JSON (truncated?); refusing to load") from None
    if not isinstance(data, dict):
        raise ArtifactIntegrityError(f"{where}: its sha256 record is not a JSON object; refusing to load")
    return data


# --- Verification ------------------------------------------------------------------------------------


def verify_digests(actual: Mapping[str, str], expected: Mapping[str, str], where: str,
                   since: str = "registration", action: str = "load") -> None:
    """ArtifactIntegrityError (one line, naming ``where`` and the first file in path order) unless the
    two maps are equal; ``since``: when ``expected`` was recorded, ``action``: what is refused."""
    for rel in sorted(set(actual) | set(expected)):
        if rel not in actual:
            problem = f"is missing (recorded sha256 {expected[rel][:12]}…)"
        elif rel not in expected:
            problem = f"was added since {since} (sha256 {actual[rel][:12]}…)"
        elif actual[rel] != expected[rel]:
            problem = f"changed since {since} (sha256 {actual[rel][:12]}… != {expected[rel][:12]}…)"
        else:
            continue
        raise ArtifactIntegrityError(f"{where}: artifact {rel} {problem}; refusing to {action}")


def known_model_codes() -> dict[str, bytes]:
    """{file name: bytes} of every models-from-code file this landuse writes."""
    from landuse.serving import embeddings
    from landuse.serving.pyfunc import MODEL_CODE

    codes = {MODEL_CODE.name: MODEL_CODE.read_bytes()}
    for cls in (embeddings.FlowEmbeddingModel, embeddings.PoiEmbeddingModel, embeddings.ImageEncoderModel):
        name, text = embeddings.model_code_text(cls)
        codes[name] = text.encode()
    return codes


def check_loader(directory: Path, where: str) -> None:
    """ArtifactIntegrityError unless the MLmodel in ``directory`` describes landuse's loader and nothing else."""
    import yaml

    def refuse(problem: str) -> ArtifactIntegrityError:
        return ArtifactIntegrityError(f"{where}: {problem}; refusing to load")

    for path in directory.rglob("*"):
        if path.name.lower().endswith(PICKLE_SUFFIXES):
            raise refuse(f"artifact {path.relative_to(directory).as_posix()} is a pickle")
    meta_file = directory / REGISTERED_META
    if meta_file.exists() or meta_file.is_symlink():
        try:
            registered = yaml.safe_load(meta_file.read_text()) if meta_file.is_file() and not meta_file.is_symlink() else None
        except (yaml.YAMLError, UnicodeDecodeError):
            registered = None
        if not isinstance(registered, dict) or not set(registered) <= {"model_name", "model_version"}:
            raise refuse(f"artifact {REGISTERED_META} holds more than MLflow's model name and version")
    mlmodel = directory / "MLmodel"
    if not mlmodel.is_file():
        raise refuse("no MLmodel file")
    try:
        meta = yaml.safe_load(mlmodel.read_text())  # safe_load: plain YAML, no Python objects
    except yaml.YAMLError as exc:
        raise refuse(f"MLmodel is not YAML ({str(exc).splitlines()[0]})") from None
    flavors = (meta or {}).get("flavors") if isinstance(meta, dict) else None
    if not isinstance(flavors, dict) or set(flavors) != {"python_function"}:
        raise refuse(f"MLmodel flavors {sorted(flavors or {})} are not landuse's (python_function only)")
    conf = flavors["python_function"] or {}
    if conf.get("loader_module") != CODE_LOADER:
        raise refuse(f"MLmodel loader_module {conf.get('loader_module')!r} is not landuse's ({CODE_LOADER})")
    for key in ("python_model", "data"):
        if conf.get(key):
            raise refuse(f"MLmodel python_function.{key} {conf[key]!r} is not landuse's loader (models from code)")
    if conf.get("code"):  # code paths go onto sys.path before anything loads
        raise refuse(f"MLmodel python_function.code {conf['code']!r}: landuse models carry no code paths")
    code_path = conf.get("model_code_path")
    if not code_path:
        raise refuse("MLmodel has no model_code_path (not a landuse models-from-code model)")
    name = os.path.basename(str(code_path))  # MLflow loads <model dir>/<basename>
    known = known_model_codes()
    if name not in known:
        raise refuse(f"model code file {name} is not one that landuse writes")
    code = directory / name
    if not code.is_file() or code.read_bytes() != known[name]:
        raise refuse(f"model code file {name} differs from this landuse's")
    for key, item in (conf.get("artifacts") or {}).items():
        rel = (item or {}).get("path") if isinstance(item, dict) else None
        target = (directory / str(rel)).resolve() if rel else None
        if target is None or not target.is_relative_to(directory.resolve()) or not target.exists():
            raise refuse(f"MLmodel artifact {key!r} path {rel!r} is not inside the model directory")


@contextmanager
def verified_model_dir(model_uri: str) -> Iterator[Path]:
    """A private local copy of a model's artifacts, verified against its record (module docstring).

    Yields the directory (removed on exit); raises ArtifactIntegrityError (one line) otherwise.
    """
    import mlflow

    expected, where, download = registry_record(model_uri)
    with tempfile.TemporaryDirectory(prefix="landuse-model-") as tmp:  # mode 0700: only we write here
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=download, dst_path=tmp))
        verify_digests(directory_digests(local, where), expected, where)
        check_loader(local, where)
        yield local


@contextmanager
def no_pickle() -> Iterator[None]:
    """MLflow's pickle deserialisation switched off (``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``) inside."""
    key = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def load_verified_pyfunc(model_uri: str, loader: Callable[[str], Any] | None = None) -> Any:
    """``mlflow.pyfunc.load_model`` of a model's verified local copy (see :func:`verified_model_dir`)."""
    import mlflow.pyfunc

    with verified_model_dir(model_uri) as local, no_pickle():
        return (loader or mlflow.pyfunc.load_model)(str(local))
