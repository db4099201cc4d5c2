"""Adapter options: declared per adapter, validated once, with one-line errors naming the option."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from landuse.ingest.errors import IngestError

_MISSING: Any = object()


@dataclass(frozen=True)
class Option:
    """One adapter option: name, expected kind, default (``REQUIRED`` when it must be given), help.

    ``kind`` is one of ``str``, ``bool``, ``int``, ``float``, ``path``, ``str_list`` (a string or a
    list of strings), ``choice`` (one of ``choices``).
    """

    name: str
    kind: str = "str"
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] = ()


REQUIRED: Any = _MISSING


def parse_options(
    given: Mapping[str, Any], declared: tuple[Option, ...], where: str
) -> dict[str, Any]:
    """Check ``given`` against ``declared`` and return every option with defaults filled in.

    ``where`` names the source in messages, e.g. ``"trip source 'bikes' (adapter tfl_cycle_hire)"``.
    """
    spec = {opt.name: opt for opt in declared}
    unknown = sorted(set(given) - set(spec))
    if unknown:
        allowed = ", ".join(sorted(spec)) or "none"
        raise IngestError(f"{where}: unknown option {unknown[0]!r} (allowed: {allowed})")
    out: dict[str, Any] = {}
    for name, opt in spec.items():
        if name not in given or given[name] is None:
            if opt.default is _MISSING:
                raise IngestError(f"{where}: option {name!r} is required ({opt.help})")
            out[name] = opt.default
            continue
        out[name] = _convert(opt, given[name], where)
    return out


def _convert(opt: Option, value: Any, where: str) -> Any:
    bad = f"{where}: option {opt.name!r}"
    if opt.kind == "bool":
        if not isinstance(value, bool):
            raise IngestError(f"{bad} must be true or false, got {value!r}")
        return value
    if opt.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise IngestError(f"{bad} must be an integer, got {value!r}")
        return value
    if opt.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise IngestError(f"{bad} must be a number, got {value!r}")
        return float(value)
    if opt.kind == "path":
        if not isinstance(value, (str, Path)):
            raise IngestError(f"{bad} must be a path, got {value!r}")
        path = Path(value)
        if not path.exists():
            raise IngestError(f"{bad}: file not found: {path}")
        return path
    if opt.kind == "str_list":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) and v for v in items) or not items:
            raise IngestError(f"{bad} must be a string or a non-empty list of strings, got {value!r}")
        return tuple(items)
    if opt.kind == "choice":
        if value not in opt.choices:
            raise IngestError(f"{bad} must be one of {', '.join(opt.choices)}, got {value!r}")
        return value
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise IngestError(f"{bad} must be a string, got {value!r}")
    return str(value)
