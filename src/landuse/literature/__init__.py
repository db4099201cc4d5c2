"""Published results of other papers, shipped as data (``published.yaml`` beside this module).

The benchmark tables quote these numbers beside ours as rows of kind ``published``; they are never
recomputed. :func:`benchmark` returns one benchmark's entry (title, protocol, source, metric names
and the results in table order); a metric a paper does not report is NaN in :attr:`Result.values`.
A malformed file is a one-line :class:`~landuse.errors.CorruptInputError` naming the file and the
entry.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from landuse.errors import CorruptInputError

FILE = "published.yaml"
BENCHMARK_KEYS = ("title", "protocol", "source", "metrics", "results")
RESULT_KEYS = ("method", "citation", "paper", "table", "values")


@dataclass(frozen=True)
class Result:
    """One published method's numbers on a benchmark; ``values`` has every metric (NaN: not reported)."""

    method: str
    citation: str
    paper: str
    table: str
    values: Mapping[str, float]


@dataclass(frozen=True)
class Benchmark:
    """A benchmark's published results: what was measured, how, where the numbers come from."""

    key: str
    title: str
    protocol: str
    source: str
    metrics: Mapping[str, str]  # metric name -> meaning
    results: tuple[Result, ...]


def _text(value: Any, where: str) -> str:
    """``value`` as a non-empty one-line string (CorruptInputError naming ``where`` otherwise)."""
    if not isinstance(value, str) or not value.strip():
        raise CorruptInputError(f"{where}: must be non-empty text, got {value!r}")
    return " ".join(value.split())


def _result(raw: Any, metrics: Mapping[str, str], where: str) -> Result:
    """One entry of ``results`` checked against the benchmark's metric names."""
    if not isinstance(raw, dict) or sorted(raw) != sorted(RESULT_KEYS):
        raise CorruptInputError(f"{where}: a result needs exactly the keys {', '.join(RESULT_KEYS)}")
    values = raw["values"]
    if not isinstance(values, dict) or not values:
        raise CorruptInputError(f"{where}.values: must map metric names to numbers")
    unknown = sorted(set(values) - set(metrics))
    if unknown:
        raise CorruptInputError(f"{where}.values: unknown metric {unknown[0]!r} (declared: {', '.join(metrics)})")
    for name, value in values.items():
        # bool is an int: a stray `yes` must not become 1.0
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise CorruptInputError(f"{where}.values.{name}: must be a finite number, got {value!r}")
    return Result(method=_text(raw["method"], f"{where}.method"), citation=_text(raw["citation"], f"{where}.citation"),
                  paper=_text(raw["paper"], f"{where}.paper"), table=_text(raw["table"], f"{where}.table"),
                  values={m: float(values.get(m, math.nan)) for m in metrics})


def parse(data: Any, source: str) -> dict[str, Benchmark]:
    """The benchmarks of a loaded YAML document ``data``; ``source`` names it in errors."""
    if not isinstance(data, dict) or not data:
        raise CorruptInputError(f"{source}: must be a YAML mapping of benchmark keys to entries")
    out: dict[str, Benchmark] = {}
    for key, raw in data.items():
        where = f"{source}: {key}"
        if not isinstance(raw, dict) or sorted(raw) != sorted(BENCHMARK_KEYS):
            raise CorruptInputError(f"{where}: an entry needs exactly the keys {', '.join(BENCHMARK_KEYS)}")
        metrics = raw["metrics"]
        if not isinstance(metrics, dict) or not metrics:
            raise CorruptInputError(f"{where}.metrics: must map metric names to their meaning")
        metrics = {str(m): _text(text, f"{where}.metrics.{m}") for m, text in metrics.items()}
        if not isinstance(raw["results"], list) or not raw["results"]:
            raise CorruptInputError(f"{where}.results: must be a non-empty list")
        results = tuple(_result(r, metrics, f"{where}.results[{i}]") for i, r in enumerate(raw["results"]))
        methods = [r.method for r in results]
        if len(set(methods)) != len(methods):
            raise CorruptInputError(f"{where}.results: duplicate method names")
        out[str(key)] = Benchmark(key=str(key), title=_text(raw["title"], f"{where}.title"),
                                  protocol=_text(raw["protocol"], f"{where}.protocol"),
                                  source=_text(raw["source"], f"{where}.source"), metrics=metrics, results=results)
    return out


def load(path: Path | str | None = None) -> dict[str, Benchmark]:
    """Every benchmark in ``path`` (default: the shipped ``published.yaml``)."""
    import yaml

    where = str(path) if path is not None else f"landuse/literature/{FILE}"
    try:
        text = (Path(path).read_text(encoding="utf-8") if path is not None
                else resources.files(__package__).joinpath(FILE).read_text(encoding="utf-8"))
        data = yaml.safe_load(text)  # safe_load: plain YAML, no Python objects
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CorruptInputError(f"{where}: unreadable published results ({type(exc).__name__}); "
                                "reinstall landuse or restore the file") from None
    return parse(data, where)


@functools.cache
def _shipped() -> dict[str, Benchmark]:
    """The shipped file, read once per process."""
    return load()


def benchmark(key: str) -> Benchmark:
    """The shipped published results of benchmark ``key`` (e.g. ``nyc_mh180``, ``nyc_ct2020_landuse``)."""
    benchmarks = _shipped()
    if key not in benchmarks:
        raise KeyError(f"no published results for {key!r} (have: {', '.join(benchmarks)})")
    return benchmarks[key]
