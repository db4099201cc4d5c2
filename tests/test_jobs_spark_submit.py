"""Every job in jobs/ through the ``spark-submit`` shipped with pyspark (local mode, tiny synthetic
city), and the ``make dist`` artefacts (wheel + ``--py-files`` zip). See docs/cluster.md."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import landuse

REPO = Path(__file__).resolve().parents[1]
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"
CONFIG = "conf/synthetic_shenzhen.yaml"
TINY = ["synth.scale=tiny", "spark.shuffle_partitions=2"]
TRAIN = ["training.splits=2", "training.epochs=10", "training.progress=false"]
# (job file, its stage name in landuse.stages.STAGES) in pipeline order
STAGE_JOBS = [
    ("synth", "synth"), ("regions", "regions"), ("ingest", "ingest"), ("flows", "flows"), ("pois", "pois"),
    ("labels", "labels"), ("flow_embeddings", "flow-embeddings"), ("poi_embeddings", "poi-embeddings"),
    ("poi_features", "poi-features"), ("imagery", "imagery"), ("location", "location"),
    ("buildings", "buildings"), ("assemble", "assemble"),
]
_failed: list[str] = []  # jobs of the chain that failed; later ones skip with that reason


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SPARK_HOME", "PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "PYSPARK_SUBMIT_ARGS")}
    env.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable, DO_NOT_TRACK="true",
               SCARF_NO_ANALYTICS="true", MLFLOW_DISABLE_TELEMETRY="true")
    return env


def spark_submit(script: str | Path, args: list[str], *, py_files: Path | None = None) -> subprocess.CompletedProcess:
    """``spark-submit --master local[2] SCRIPT ARGS`` from the repository root."""
    # No UI port; no whole-stage codegen (compiling costs more than it saves on kilobytes, as in the
    # conftest session).
    cmd = [str(SPARK_SUBMIT), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
           "--conf", "spark.sql.codegen.wholeStage=false"]
    if py_files is not None:
        cmd += ["--py-files", str(py_files)]
    proc = subprocess.run([*cmd, str(script), *args], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"spark-submit {script} exited {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}"
                    f"\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SPARK_SUBMIT.exists():
        pytest.skip(f"spark-submit not found beside the interpreter ({SPARK_SUBMIT}); install pyspark in it")
    return tmp_path_factory.mktemp("submit-work")


def _args(work: Path, *extra: str) -> list[str]:
    return ["--config", CONFIG, f"work_dir={work}", *TINY, *extra]


def _needs(job: str) -> None:
    if _failed:
        pytest.skip(f"an earlier job of the chain failed ({', '.join(_failed)})")
    _failed.append(job)  # removed again when the job passes


def _passed(job: str) -> None:
    _failed.remove(job)


@pytest.mark.slow
@pytest.mark.parametrize("job,stage", STAGE_JOBS, ids=[j for j, _ in STAGE_JOBS])
def test_stage_job(work: Path, job: str, stage: str) -> None:
    """jobs/<stage>.py runs the stage and commits each of its outputs with a manifest."""
    from landuse.config import load_config
    from landuse.stages import STAGES

    _needs(job)
    if job == "assemble":  # the generic entry point, jobs/run.py STAGE, for one stage of the chain
        proc = spark_submit("jobs/run.py", [stage, *_args(work)])
    else:
        proc = spark_submit(f"jobs/{job}.py", _args(work))
    outputs = STAGES[stage].outputs(load_config([REPO / CONFIG], [f"work_dir={work}", *TINY], check_inputs=False))
    assert outputs, stage
    for name, path in outputs.items():
        manifest = path / "_manifest.json"
        assert manifest.is_file(), f"{stage}: no manifest in {path}"
        assert json.loads(manifest.read_text())["stage"] == stage
        assert f"{stage}: ran {name} -> {path}" in proc.stdout
    _passed(job)


@pytest.mark.slow
def test_pipeline_job_skips_unchanged(work: Path) -> None:
    """jobs/pipeline.py and jobs/run.py pipeline after the stage jobs: every data stage is reported
    unchanged (pretrain is disabled: H_img from band statistics)."""
    from landuse.runner import plan
    from landuse.stages import STAGES

    _needs("pipeline")
    expected = {name: "disabled" if name == "pretrain" else "unchanged" for name in plan(STAGES, "assemble")}
    for script, args in (("jobs/pipeline.py", _args(work)), ("jobs/run.py", ["pipeline", *_args(work)])):
        proc = spark_submit(script, args)
        status = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()
                  if line.split() and line.split()[0] in STAGES}
        assert status == expected, proc.stdout
    _passed("pipeline")


@pytest.mark.slow
def test_train_and_predict_jobs(work: Path) -> None:
    """jobs/train.py registers a champion in the work dir's MLflow store; jobs/predict.py uses it."""
    _needs("train")
    proc = spark_submit("jobs/train.py", _args(work, *TRAIN))
    assert "train: registered landuse-hgcn v1" in proc.stdout, proc.stdout[-2000:]
    assert (work / "results" / "train" / "train.md").is_file()
    assert (work / "mlflow.db").is_file()

    proc = spark_submit("jobs/predict.py", _args(work, *TRAIN))
    assert "predict:" in proc.stdout
    manifest = json.loads((work / "tables" / "predictions" / "_manifest.json").read_text())
    regions = json.loads((work / "tables" / "regions" / "_manifest.json").read_text())
    assert manifest["stage"] == "predict"
    assert manifest["rows"] == regions["rows"] > 0
    geojson = json.loads((work / "maps" / "predictions" / "predictions.geojson").read_text())
    assert len(geojson["features"]) == regions["rows"]
    _passed("train")


@pytest.mark.slow
def test_monitor_and_report_jobs(work: Path) -> None:
    """jobs/monitor.py flags plan deviations from the predictions; jobs/report.py writes the HTML report."""
    _needs("monitor")
    proc = spark_submit("jobs/monitor.py", _args(work, *TRAIN))
    assert "monitor:" in proc.stdout
    assert json.loads((work / "tables" / "monitoring" / "_manifest.json").read_text())["stage"] == "monitor"
    proc = spark_submit("jobs/report.py", _args(work, *TRAIN))
    assert (work / "report" / "report.html").is_file(), proc.stdout[-2000:]
    _passed("monitor")


@pytest.mark.slow
def test_ablation_and_fusion_jobs(work: Path) -> None:
    """jobs/ablation.py and jobs/fusion.py write their tables (two variants / two feature sets)."""
    _needs("ablation")
    spark_submit("jobs/ablation.py", _args(work, *TRAIN, "training.variants=[None,GCN_adj]"))
    assert (work / "results" / "ablation" / "ablation.md").is_file()
    spark_submit("jobs/fusion.py", _args(work, *TRAIN, "training.fusion=[P,PI]"))
    assert (work / "results" / "fusion" / "fusion.md").is_file()
    _passed("ablation")


# ----------------------------------------------------------------------------------------------
# make dist
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make dist`` into a temporary DIST_DIR (the venv stamp is not remade: no pip installs)."""
    if shutil.which("make") is None:
        pytest.skip("make not found")
    if Path(sys.executable).parent.resolve() != (REPO / ".venv" / "bin").resolve():
        pytest.skip(f"make dist builds with {REPO}/.venv; this interpreter is {sys.executable}")
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(["make", "-o", ".venv/.installed", "dist", f"DIST_DIR={out}"], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _modules() -> set[str]:
    src = REPO / "src"
    return {p.relative_to(src).as_posix() for p in (src / "landuse").rglob("*.py") if "__pycache__" not in p.parts}


@pytest.mark.slow
def test_dist_artefacts_hold_every_module(dist: Path) -> None:
    """The wheel and the --py-files zip each carry every module of src/landuse."""
    v = landuse.__version__
    wheel, pyzip = dist / f"landuse-{v}-py3-none-any.whl", dist / f"landuse-{v}.zip"
    assert wheel.is_file() and pyzip.is_file(), sorted(p.name for p in dist.iterdir())
    modules = _modules()
    assert {"landuse/__init__.py", "landuse/stages/__init__.py", "landuse/entrypoints/flows.py"} <= modules
    in_zip = {n for n in zipfile.ZipFile(pyzip).namelist() if n.endswith(".py")}
    in_wheel = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("landuse/") and n.endswith(".py")}
    assert modules - in_zip == set()
    # Packages without __init__.py are dropped by find_packages() and cannot be imported from a zip.
    assert modules - in_wheel == set(), "missing from the wheel (package without __init__.py?)"


@pytest.mark.slow
def test_py_files_zip_imports_on_driver_and_executors(work: Path, dist: Path, tmp_path: Path) -> None:
    """Under spark-submit --py-files the zip's landuse is imported by the driver and the executors,
    and every module imports from it; a stage job then runs with it (on the chain's tables)."""
    pyzip = dist / f"landuse-{landuse.__version__}.zip"
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import importlib, pkgutil, sys\n"
        "import landuse\n"
        "from landuse.spark.session import build_session\n"
        "from landuse.config import Config\n"
        "mods = [m.name for m in pkgutil.walk_packages(landuse.__path__, 'landuse.')]\n"
        "[importlib.import_module(m) for m in mods]\n"
        f"spark = build_session(Config(name='probe', work_dir={str(tmp_path / 'w')!r}))\n"
        "remote = spark.sparkContext.parallelize([0], 1).map(lambda _: __import__('landuse').__file__).collect()\n"
        "print('DRIVER', landuse.__file__)\n"
        "print('EXECUTOR', remote[0])\n"
        "print('MODULES', len(mods))\n"
    )
    proc = spark_submit(probe, [], py_files=pyzip)
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.split(" ", 1)[0] in
                 ("DRIVER", "EXECUTOR", "MODULES"))
    suffix = f"{pyzip.name}/landuse/__init__.py"
    assert lines["DRIVER"].endswith(suffix) and lines["EXECUTOR"].endswith(suffix), lines
    assert int(lines["MODULES"]) >= len(_modules()) - 1  # all but landuse/__init__.py itself

    if _failed or not (work / "tables" / "regions" / "_manifest.json").is_file():
        pytest.skip("needs the regions table of the job chain above")
    before = json.loads((work / "tables" / "geo_features" / "_manifest.json").read_text())["started"]
    proc = spark_submit("jobs/location.py", ["--config", CONFIG, "--force", f"work_dir={work}", *TINY], py_files=pyzip)
    assert "location: ran geo_features" in proc.stdout
    after = json.loads((work / "tables" / "geo_features" / "_manifest.json").read_text())["started"]
    assert after >= before


# ----------------------------------------------------------------------------------------------
# cluster overlay and Databricks bundle (static checks)
# ----------------------------------------------------------------------------------------------


def test_cluster_overlay_layers_on_a_dataset_config() -> None:
    """conf/cluster.example.yaml loads on top of a dataset config with the settings Sedona needs."""
    from landuse.config import load_config
    from landuse.spark.session import SEDONA_KRYO_REGISTRATOR

    config = load_config([REPO / CONFIG, REPO / "conf" / "cluster.example.yaml"], check_inputs=False)
    assert config.spark.master is None
    assert "org.apache.sedona:sedona-spark-shaded-3.5_2.12:" in config.spark.conf["spark.jars.packages"]
    assert config.spark.conf["spark.serializer"] == "org.apache.spark.serializer.KryoSerializer"
    assert config.spark.conf["spark.kryo.registrator"] == SEDONA_KRYO_REGISTRATOR
    assert config.synth.dir == config.work_dir / "city"  # ${work_dir} follows the overlay
    assert config.mlflow.tracking_uri == "databricks" and config.mlflow.experiment.startswith("/")
    assert config.training.registered_model.count(".") == 2  # Unity Catalog: catalog.schema.model


def test_databricks_bundle_tasks_call_the_wheels_entry_point() -> None:
    """deploy/databricks/databricks.yml (generated from the DAG, see tests/test_dag.py): every task runs
    ``landuse run STAGE`` through the wheel's ``landuse`` console script, on the wheel `make dist` builds."""
    import tomllib

    import yaml

    from landuse.stages import STAGES

    bundle_file = REPO / "deploy" / "databricks" / "databricks.yml"
    doc = yaml.safe_load(bundle_file.read_text())
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for task in doc["resources"]["jobs"]["landuse"]["tasks"]:
        wheel_task = task["python_wheel_task"]
        assert scripts[wheel_task["entry_point"]] == "landuse.cli:main" and wheel_task["package_name"] == "landuse"
        command, stage, *rest = wheel_task["parameters"]
        assert command == "run" and stage == task["task_key"] and stage in STAGES
        assert rest[0] == "--config" and any(p.startswith("work_dir=") for p in rest)
        wheels = [lib["whl"] for lib in task["libraries"] if "whl" in lib]
        assert wheels == ["../../dist/landuse-*-py3-none-any.whl"]  # what `make dist` writes
    assert (bundle_file.parent / doc["artifacts"]["landuse"]["path"] / "pyproject.toml").is_file()
