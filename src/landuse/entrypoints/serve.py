"""``landuse run serve``: MLflow's REST scoring server for a registered model, from a verified copy.

``mlflow models serve -m models:/...`` would run the artifact's code file as it is in the store; this
command first downloads the artifacts into a private directory, checks every file against the
sha256 record of the registered version and the loader (:func:`landuse.serving.integrity.verified_model_dir`),
and serves that directory. The server binds to 127.0.0.1 unless ``--host`` says otherwise; the copy
is removed when the server stops.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from landuse.entrypoints.common import add_config_args, guarded, load_from_args


def serve_command(model_dir: Path, host: str, port: int, workers: int) -> list[str]:
    """The ``mlflow models serve`` command line for a verified local model directory."""
    return [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir), "--env-manager", "local",
            "-h", host, "-p", str(port), "--workers", str(workers)]


def main(argv: list[str] | None = None) -> int:
    """``landuse run serve --config conf/X.yaml [--model URI] [--host H] [--port P] [--workers N]``."""
    parser = argparse.ArgumentParser(prog="landuse run serve",
                                     description="REST scoring server (mlflow models serve) for a verified model")
    add_config_args(parser)
    parser.add_argument("--model", default=None,
                        help="MLflow model URI; default: models:/<training.registered_model>@champion")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)

    def body() -> int:
        from landuse.serving.integrity import verified_model_dir
        from landuse.training.tracking import setup_mlflow

        config = load_from_args(args)
        setup_mlflow(config)
        uri = args.model or f"models:/{config.training.registered_model}@champion"
        # MLflow's CLI execs `uvicorn` by name: the interpreter's bin directory must be on PATH
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
        with verified_model_dir(uri) as model_dir:
            print(f"serve: {uri} verified -> http://{args.host}:{args.port}/invocations", flush=True)
            proc = subprocess.Popen(serve_command(model_dir, args.host, args.port, args.workers), env=env)
            # SIGTERM (docker stop, a scheduler) stops the server; the verified copy is then removed
            previous = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
            try:
                return proc.wait()
            except KeyboardInterrupt:
                proc.terminate()
                proc.wait()
                return 130
            finally:
                signal.signal(signal.SIGTERM, previous)

    return guarded(body)
