"""Config loading: merging, overrides, interpolation, and one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from landuse.config import Config, ConfigError, load_config


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_repo_configs_load(repo_root: Path) -> None:
    for name in ("synthetic_shenzhen.yaml", "synthetic_london.yaml"):
        config = load_config(repo_root / "conf" / name)
        assert isinstance(config, Config)
        assert config.synth.enabled
        assert str(config.synth.dir).endswith("/city")


def test_extends_overrides_and_interpolation(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "seed: 1\nspark:\n  shuffle_partitions: 3\n  conf: {a.b: x}\n")
    top = write(tmp_path / "top.yaml", "extends: base.yaml\nname: t\nwork_dir: /tmp/w\nsynth:\n  dir: ${work_dir}/city\n")
    config = load_config(top, ["seed=7", "spark.driver_memory=1g", "synth.scale=tiny"])
    assert config.seed == 7
    assert config.spark.shuffle_partitions == 3
    assert config.spark.driver_memory == "1g"
    assert config.spark.conf["a.b"] == "x"
    assert config.synth.scale == "tiny"
    assert config.synth.dir == Path("/tmp/w/city")


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "c.yaml", "name: x\n"))
    with pytest.raises(Exception):
        config.seed = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.spark.conf["new"] = "v"  # type: ignore[index]


def test_layered_files_merge_in_order(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", "name: a\nspark: {shuffle_partitions: 4, driver_memory: 2g}\n")
    b = write(tmp_path / "b.yaml", "spark: {shuffle_partitions: 200}\n")
    config = load_config([a, b])
    assert config.spark.shuffle_partitions == 200
    assert config.spark.driver_memory == "2g"


@pytest.mark.parametrize(
    ("text", "overrides", "expected"),
    [
        ("name: x\nsparkk: {}\n", [], "sparkk: unknown key"),
        ("name: x\nspark: {shuffle_partitions: many}\n", [], "spark.shuffle_partitions: expected an integer, got str 'many'"),
        ("name: x\n", ["spark.shuffle_partitions=1.5"], "spark.shuffle_partitions: expected an integer"),
        ("name: x\nspatial: {engine: gpu}\n", [], "spatial.engine: 'gpu' is not one of auto, sedona, builtin"),
        ("name: x\nsynth: {enabled: maybe}\n", [], "synth.enabled: expected true/false"),
        ("seed: 3\n", [], "name: required key is missing"),
        ("name: x\nspark: 5\n", [], "spark: expected a mapping"),
        ("name: x\n", ["novalue"], "expected key=value"),
        # pydantic's errors, as one line with the dotted key path
        ("name: x\n", ["training.epoch=3"], "training.epoch: unknown key; did you mean epochs? (allowed here: block_m,"),
        ("name: x\ninputs:\n  trips:\n    bikes: {adapter: citibike, path: 5}\n", [],
         "inputs.trips.bikes.path: expected a path string, got int 5"),
        ("name: x\ninputs:\n  trips:\n    bikes: {path: a.csv}\n", [], "inputs.trips.bikes.adapter: required key is missing"),
        ("name: x\n", ["embeddings.image.percentiles=[10, x]"], "embeddings.image.percentiles[1]: expected a number, got str 'x'"),
        ("name: x\n", ["embeddings.flow=3"], "embeddings.flow: expected a mapping, got int 3"),
        ("name: x\n", ["spark=null"], "spark: must not be null"),
        ("name: x\n", ["training.features=poi"], "training.features: expected a list, got str 'poi'"),
        ("name: x\nspark: {conf: {a: true}}\n", [], "spark.conf.a: expected a string, got bool True"),
        ("name: x\n", ["training.splits=0", "training.epochs=-1"], "training.epochs: must be > 0"),  # a section's _problems
        ("name: x\nwork_dir: ${nope.key}\n", [], "reference ${nope.key}: no such key"),
        ("name: x\n  bad: [indent\n", [], "invalid YAML"),
        (
            "name: x\ninputs:\n  pois: {adapter: amap_csv, path: /definitely/missing.csv}\n",
            [],
            "inputs.pois.path: input path not found: /definitely/missing.csv",
        ),
        (
            "name: x\ninputs:\n  trips:\n    bikes: {adapter: tfl_cycle_hire, path: /tmp, options: {stations_path: /no/stations.csv}}\n",
            [],
            "inputs.trips.bikes.options.stations_path: input path not found",
        ),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, overrides: list[str], expected: str) -> None:
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert message.startswith(str(path)) or "override" in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_synthetic_inputs_may_not_exist_yet(tmp_path: Path) -> None:
    text = (
        "name: x\nwork_dir: " + str(tmp_path) + "\nsynth: {enabled: true, dir: '${work_dir}/city'}\n"
        "inputs:\n  pois: {adapter: amap_csv, path: '${work_dir}/city/pois/amap_pois.csv'}\n"
    )
    config = load_config(write(tmp_path / "c.yaml", text))
    assert config.inputs.pois is not None
    assert config.inputs.pois.path == tmp_path / "city/pois/amap_pois.csv"


def test_section_hash_tracks_only_named_sections(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "name: x\n")
    a = load_config(path)
    b = load_config(path, ["spark.shuffle_partitions=99"])
    c = load_config(path, ["seed=5"])
    assert a.section_hash("seed", "synth") == b.section_hash("seed", "synth")
    assert a.section_hash("seed") != c.section_hash("seed")


def test_cli_bad_config_exits_nonzero_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "name: x\nspark: {shuffle_partitions: many}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "landuse.cli", "config", "--config", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {path}: spark.shuffle_partitions: expected an integer, got str 'many'"]
    assert "Traceback" not in proc.stderr


def test_readme_embeds_the_current_config_reference(repo_root) -> None:
    from landuse.config_reference import reference_markdown, reference_rows

    keys = [row[0] for row in reference_rows()]
    assert "training.variant" in keys and "embeddings.image.patch_size" in keys and "inputs.planned" in keys
    assert all(row[3] for row in reference_rows()), "every config key needs a trailing # comment in config.py"
    assert reference_markdown() in (repo_root / "README.md").read_text(), \
        "README config reference is stale: regenerate it with `landuse config --reference`"


def test_secrets_are_redacted_in_resolved_config_and_mlflow_params(tmp_path: Path, monkeypatch) -> None:
    """spark.conf / storage.options secrets never reach resolved_config.json or MLflow; the config keeps them."""
    import argparse
    import json

    import mlflow

    from landuse.entrypoints.common import load_from_args
    from landuse.storage import fsspec_options
    from landuse.training.tracking import log_config

    secrets = {"spark.hadoop.fs.s3a.secret.key": "S3CR3T-sk", "spark.hadoop.fs.s3a.access.key": "AKIA-ak",
               "spark.hadoop.fs.s3a.session.token": "TOK-st", "spark.hadoop.fs.azure.account.key.a.dfs": "AZ-k",
               "spark.ssl.keyStorePassword": "PW-ks"}
    path = write(tmp_path / "c.yaml", "name: s\nwork_dir: " + str(tmp_path / "w") + "\nspark:\n  conf:\n"
                 + "".join(f"    {k}: {v}\n" for k, v in secrets.items())
                 + "    spark.jars.packages: org.example:kept:1.0\n"
                 + "storage:\n  options: {key: AKIA-fs, secret: S3CR3T-fs, token: TOK-fs, anon: 'false'}\n")
    config = load_from_args(argparse.Namespace(config=[str(path)], overrides=[]))
    values = list(secrets.values()) + ["AKIA-fs", "S3CR3T-fs", "TOK-fs"]

    written = (tmp_path / "w" / "resolved_config.json").read_text()
    logged: dict[str, str] = {}
    monkeypatch.setattr(mlflow, "log_params", logged.update)
    log_config(config)
    for text in (written, json.dumps(logged)):
        assert not [v for v in values if v in text]
    resolved = json.loads(written)
    assert resolved["spark"]["conf"]["spark.hadoop.fs.s3a.secret.key"] == "***"
    assert resolved["spark"]["conf"]["spark.jars.packages"] == "org.example:kept:1.0"  # non-secrets unchanged
    assert resolved["storage"]["options"] == {"key": "***", "secret": "***", "token": "***", "anon": "false"}
    assert logged["spark.conf.spark.hadoop.fs.s3a.access.key"] == "***"
    assert logged["embeddings.poi_features.max_tokens"] == "512"  # only spark.conf / storage.options are redacted
    # what the session and the filesystems are given keeps the real values
    assert dict(config.spark.conf) == {**secrets, "spark.jars.packages": "org.example:kept:1.0"}
    assert fsspec_options("s3", config.storage)["secret"] == "S3CR3T-fs"


@pytest.mark.parametrize("name", ["../../../victim", '"><img src=x>', ".hidden", "a/b", "x" * 65])
def test_unsafe_source_names_are_refused_in_one_line(tmp_path: Path, name: str) -> None:
    """Source names become paths (tables/rejects/<source>) and MLflow names: only a safe character set."""
    path = write(tmp_path / "bad.yaml", "name: x\ninputs:\n  trips:\n    " + json.dumps(name)
                 + ": {adapter: citibike, path: trips.csv}\n")
    proc = subprocess.run([sys.executable, "-m", "landuse.cli", "config", "--config", str(path)],
                          capture_output=True, text=True)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: inputs.trips: name ") and "is not allowed" in lines[0]


def test_safe_source_names_pass() -> None:
    from landuse.config import is_safe_name

    assert all(is_safe_name(n) for n in ("taxi_od", "yellow_2015-07", "bike.v2", "A1"))


def test_float_keys_take_scientific_notation_and_override_items_round_trip(repo_root, tmp_path) -> None:
    from landuse.config import _parse_override, override_item

    # YAML 1.1 reads 1e-5 (no dot) as a string; a float key takes it as the number
    config = load_config(repo_root / "conf/synthetic_london.yaml",
                         ["training.lr=1e-5", "pretrain.lr=2E-3", f"work_dir={tmp_path}"], check_inputs=False)
    assert config.training.lr == 1e-5 and config.pretrain.lr == 2e-3
    with pytest.raises(ConfigError, match="training.lr: expected a number"):
        load_config(repo_root / "conf/synthetic_london.yaml", ["training.lr=1e-x"], check_inputs=False)
    for value in (1e-5, 1e16, 0.001, 3.0, 7, True, None, "a \"quoted\" ünï", {"0": "red", "1": [1, 2.5e-7]},
                  (0.1, 0.3), "", "/tmp/x y.pt"):
        key, parsed = _parse_override(override_item("k", value))
        assert key == "k" and parsed == (list(value) if isinstance(value, tuple) else value), value


def test_pydantic_coerces_and_freezes(tmp_path: Path) -> None:
    """Values are coerced by pydantic (quoted numbers, numbers for strings, lists to tuples), mappings read-only."""
    import types

    config = load_config(write(tmp_path / "c.yaml", "name: 7\nspark: {shuffle_partitions: '5', conf: {spark.x: 3}}\n"),
                         ["training.features=[poi, geo]", "training.lr=1e-3", "work_dir=s3a://bucket/run"])
    assert config.name == "7" and config.spark.shuffle_partitions == 5 and config.spark.conf["spark.x"] == "3"
    assert config.training.features == ("poi", "geo") and config.training.lr == 1e-3
    assert isinstance(config.spark.conf, types.MappingProxyType)
    assert str(config.work_dir) == "s3a://bucket/run"  # a URI keeps its scheme (a UPath, not a Path)


def test_replace_revalidates_types_but_not_the_load_checks(tmp_path: Path) -> None:
    """``dataclasses.replace`` (used by the stages) goes through pydantic: types are checked and coerced; the
    sections' ``_problems`` run only in load_config (code may build a config a file could not)."""
    import dataclasses

    from landuse.config import TrainingConfig

    config = load_config(write(tmp_path / "c.yaml", "name: x\n"))
    assert dataclasses.replace(config.training, features=["poi"]).features == ("poi",)
    with pytest.raises(ValueError, match="splits"):
        dataclasses.replace(config.training, splits="many")
    assert dataclasses.replace(config.tune, lr=()).lr == ()  # would fail at load: "tune.lr: must list at least one value"
    assert TrainingConfig(splits=0).splits == 0


def test_sections_refuse_annotations_that_lose_uris_or_mutability() -> None:
    from landuse.config import section

    with pytest.raises(TypeError, match="ConfigPath"):
        @section
        class Bad:
            where: Path = Path("x")


def test_json_schema_describes_every_key(capsys) -> None:
    from landuse.cli import main

    assert main(["config", "--json-schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["required"] == ["name"] and schema["additionalProperties"] is False
    training = schema["$defs"]["TrainingConfig"]["properties"]
    assert training["splits"] == {"default": 30, "title": "Splits", "type": "integer",
                                  "description": training["splits"]["description"]}
    assert schema["properties"]["work_dir"]["format"] == "path"
    for name, node in [("Config", schema), *schema["$defs"].items()]:
        assert all("description" in prop for prop in node["properties"].values() if "$ref" not in prop), name


@pytest.mark.parametrize("override, key", [("spark.shuffle_partitions=true", "spark.shuffle_partitions"),
                                           ("tune.lr=[0.1,true]", "tune.lr"), ("seed=false", "seed")])
def test_a_boolean_for_a_number_key_is_refused(repo_root, override: str, key: str) -> None:
    """pydantic's lax mode would read ``true`` as 1; a config says what it means or fails in one line."""
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: expected a number, got"):
        load_config(repo_root / "conf/synthetic_shenzhen.yaml", [override])
