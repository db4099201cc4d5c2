"""The one DAG: registry order, plans, optional/ordering edges, extra state, incomplete runs, stage
locks, and the Databricks bundle generated from it (task graph = DAG)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from landuse.config import Config, load_config
from landuse.locks import LockError, stage_lock, work_dir_lock
from landuse.manifest import read_manifest
from landuse.runner import Stage, StageContext, no_spark, plan, run_pipeline, run_stage
from landuse.stages import SECTIONS, STAGES, section_stages

REPO = Path(__file__).resolve().parents[1]
EVERY_STEP = ("pretrain", "train", "ablation", "fusion", "tune", "transfer", "benchmark-landuse", "benchmark-embeddings",
              "predict", "monitor", "report")


def test_registry_is_topological_and_every_edge_names_a_stage() -> None:
    seen: set[str] = set()
    for name, stage in STAGES.items():
        assert stage.name == name
        for dep in stage.dependencies:
            assert dep in STAGES, f"{name} depends on unknown stage {dep}"
            assert dep in seen, f"{name} runs before its dependency {dep}"
        seen.add(name)
        assert stage.group in ("data", "model", "report")


def test_every_step_is_a_stage_and_report_plans_them_all() -> None:
    assert set(EVERY_STEP) <= set(STAGES)
    assert plan(STAGES, "report") == list(STAGES)  # the report depends on everything, transitively
    data = plan(STAGES, "assemble")
    assert data[-1] == "assemble" and not {"train", "ablation", "predict", "report"} & set(data)
    assert "pretrain" in data  # assemble takes H_img from the encoder when configured
    assert plan(STAGES, "monitor", only=["predict", "monitor"]) == ["predict", "monitor"]


def test_notebook_sections_partition_the_dag() -> None:
    covered = [s for section in SECTIONS for s in section_stages(section)]
    assert len(covered) == len(set(covered)) == len(STAGES)


def _stage(name: str, target: Path, calls: list[str], **kw) -> Stage:
    @no_spark
    def run(ctx: StageContext) -> None:
        calls.append(name)
        (ctx.out("t") / "x.txt").write_text(f"{name} {len(calls)}")
        if kw.pop("_fail", False) or ctx.config.vars.get("fail") == name:
            raise RuntimeError("boom")
        if ctx.config.vars.get("incomplete") == name:
            ctx.summary["complete"] = False

    return Stage(name=name, description=name, run=run, outputs=lambda c: {"t": target}, **kw)


def test_optional_upstream_after_and_extra_drive_the_fingerprint(tmp_path: Path) -> None:
    calls: list[str] = []
    state = {"champion": 1}
    registry = {
        "a": _stage("a", tmp_path / "a", calls),
        "opt": _stage("opt", tmp_path / "opt", calls),
        "b": _stage("b", tmp_path / "b", calls, upstream=("a",), optional_upstream=("opt",),
                    extra=lambda c: dict(state)),
    }
    config = Config(name="t", work_dir=tmp_path)
    assert run_stage(registry["a"], config, registry).status == "ran"
    assert run_stage(registry["b"], config, registry).status == "ran"  # opt absent: fine
    assert read_manifest(tmp_path / "b")["extra"] == {"champion": 1}
    assert run_stage(registry["b"], config, registry).status == "unchanged"
    state["champion"] = 2  # e.g. a new champion in the registry
    assert run_stage(registry["b"], config, registry).status == "ran"
    assert run_stage(registry["opt"], config, registry).status == "ran"
    assert run_stage(registry["b"], config, registry).status == "ran"  # the optional input appeared
    assert run_stage(registry["b"], config, registry).status == "unchanged"
    assert [r.status for r in run_pipeline(config, registry, until="b")] == ["unchanged"] * 3


def test_incomplete_runs_rerun_and_failures_keep_partial_output(tmp_path: Path) -> None:
    calls: list[str] = []
    stage = _stage("exp", tmp_path / "exp", calls, keep_incomplete=True)
    incomplete = Config(name="t", work_dir=tmp_path, vars={"incomplete": "exp"})
    assert run_stage(stage, incomplete).status == "ran"
    assert read_manifest(tmp_path / "exp")["complete"] is False
    assert run_stage(stage, Config(name="t", work_dir=tmp_path)).status == "ran"  # not reused
    assert run_stage(stage, Config(name="t", work_dir=tmp_path)).status == "unchanged"
    with pytest.raises(RuntimeError):
        run_stage(stage, Config(name="t", work_dir=tmp_path, vars={"fail": "exp"}), force=True)
    assert (tmp_path / "exp.incomplete" / "x.txt").read_text() == "exp 3"  # the rows done so far
    assert (tmp_path / "exp" / "x.txt").read_text() == "exp 2"  # the committed output is untouched
    assert run_stage(stage, Config(name="t", work_dir=tmp_path), force=True).status == "ran"
    assert not (tmp_path / "exp.incomplete").exists()


HOLD_STAGE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from landuse.config import Config
    from landuse.locks import stage_lock

    with stage_lock(Config(name="t", work_dir=Path(sys.argv[1])), sys.argv[3], command="landuse run " + sys.argv[3]):
        print("HELD", flush=True)
        deadline = time.time() + 60
        while not Path(sys.argv[2]).exists() and time.time() < deadline:
            time.sleep(0.05)
    """
)


def test_different_stages_run_at_once_but_not_the_same_one_or_beside_a_pipeline(tmp_path: Path) -> None:
    work, go = tmp_path / "work", tmp_path / "go"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_STAGE, str(work), str(go), "flows"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "HELD"
        config = Config(name="t", work_dir=work)
        with stage_lock(config, "pois"):  # an independent stage: allowed (parallel Databricks tasks)
            pass
        with pytest.raises(LockError, match=f"in use by pid {holder.pid}.*landuse run flows"):
            with stage_lock(config, "flows"):
                pass
        with pytest.raises(LockError, match="in use by one or more `landuse run STAGE` processes"):
            with work_dir_lock(config, command="landuse pipeline"):
                pass
    finally:
        go.touch()
        holder.communicate(timeout=60)
    with work_dir_lock(Config(name="t", work_dir=work)):
        pass


def _reachable(graph: dict[str, list[str]], start: str) -> set[str]:
    out, stack = set(), list(graph.get(start, []))
    while stack:
        node = stack.pop()
        if node not in out:
            out.add(node)
            stack.extend(graph.get(node, []))
    return out


def test_committed_bundle_is_generated_and_its_task_graph_equals_the_dag() -> None:
    config_file = "conf/synthetic_shenzhen.yaml"
    bundle_file = REPO / "deploy/databricks/databricks.yml"
    result = subprocess.run([sys.executable, "-m", "landuse.cli", "bundle", "--config", config_file, "--check",
                             "--out", str(bundle_file)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr  # regenerate: landuse bundle --config conf/synthetic_shenzhen.yaml

    doc = yaml.safe_load(bundle_file.read_text())
    job = doc["resources"]["jobs"]["landuse"]
    tasks = {t["task_key"]: t for t in job["tasks"]}
    config = load_config(REPO / config_file)
    enabled = {n for n in plan(STAGES, "report") if STAGES[n].enabled(config)}
    assert set(tasks) == enabled
    bundle_graph = {k: [d["task_key"] for d in t.get("depends_on", [])] for k, t in tasks.items()}
    # the DAG's own reachability over every stage, restricted to the enabled ones
    dag = {n: list(s.dependencies) for n, s in STAGES.items()}
    for name in enabled:
        assert _reachable(bundle_graph, name) == _reachable(dag, name) & enabled, name
        direct = {d for d in STAGES[name].dependencies if d in enabled}
        assert direct <= set(bundle_graph[name]), name  # every direct edge between enabled stages is kept
        task = tasks[name]["python_wheel_task"]
        assert task["package_name"] == "landuse" and task["entry_point"] == "landuse"
        assert task["parameters"][:2] == ["run", name]
    for group in (("flows", "pois", "labels"), ("train", "ablation", "fusion")):  # independent: run in parallel
        assert not set(group) & {d for name in group for d in bundle_graph[name]}, group
    assert "ml" in job["job_clusters"][0]["new_cluster"]["spark_version"]  # torch + MLflow from the ML runtime
    assert doc["artifacts"]["landuse"]["type"] == "whl"


def test_pipeline_dry_run_lists_the_plan(tmp_path: Path) -> None:
    from landuse.entrypoints.pipeline import main

    out = subprocess.run([sys.executable, "-m", "landuse.cli", "pipeline", "--config", "conf/synthetic_shenzhen.yaml",
                          f"work_dir={tmp_path}/w", "--until", "fusion", "--dry-run"], capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert names == plan(STAGES, "fusion")
    assert "pretrain               disabled by config" in out.stdout  # H_img from band statistics
    assert main(["--config", "conf/synthetic_shenzhen.yaml", f"work_dir={tmp_path}/w", "--until", "nope"]) == 2
