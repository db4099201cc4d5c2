"""SIGTERM during a tracked run: end the MLflow runs as KILLED, then exit 143.

Without a handler, SIGTERM (``kill``, a scheduler's time limit, ``docker stop``) ends the process
before MLflow's ``with start_run()`` blocks can close: the runs stay RUNNING forever in the
tracking store. Entry points that start runs wrap their body with :func:`kill_runs_on_sigterm`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading
from types import FrameType
from typing import Any, Callable, Iterator, TypeVar

log = logging.getLogger(__name__)

SIGTERM_EXIT = 128 + signal.SIGTERM  # 143: the shell's code for "terminated by SIGTERM"

F = TypeVar("F", bound=Callable[..., Any])


def end_active_runs(status: str = "KILLED") -> list[str]:
    """End every run on this thread's MLflow stack (nested first, then the parent) with ``status``; their ids."""
    import sys

    if "mlflow" not in sys.modules:  # no run can be active if MLflow was never imported
        return []
    import mlflow

    ended: list[str] = []
    while (run := mlflow.active_run()) is not None:
        try:
            mlflow.end_run(status=status)
        except Exception:  # noqa: BLE001 - the store may be unreachable; still end the others and exit
            # end_run pops the run before writing its status, so the loop still ends.
            log.warning("could not mark MLflow run %s %s", run.info.run_id, status, exc_info=True)
        ended.append(run.info.run_id)
    return ended


@contextlib.contextmanager
def runs_killed_on_sigterm() -> Iterator[None]:
    """While inside, SIGTERM ends the active MLflow runs as KILLED and exits with code 143.

    The previous handler is restored on the way out (and before exiting on SIGTERM). Outside the
    main thread, where Python cannot install handlers, this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, previous)  # a second SIGTERM is not caught again
        ended = end_active_runs("KILLED")
        log.warning("SIGTERM: MLflow run(s) %s ended KILLED; exiting", ", ".join(ended) or "(none)")
        # SystemExit unwinds the stack (Spark and file handles close); `with start_run()` blocks
        # find their runs already ended and leave them KILLED.
        raise SystemExit(SIGTERM_EXIT)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def kill_runs_on_sigterm(main: F) -> F:
    """Decorator form of :func:`runs_killed_on_sigterm` for an entry point's ``main``."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with runs_killed_on_sigterm():
            return main(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
