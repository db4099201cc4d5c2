"""``landuse run zeroshot [--method text|llm|image]`` (see landuse.zeroshot.run): land use without labels
from POI-paragraph prompts (text: offline sentence embeddings; llm: the user's endpoint; image: the
user's CLIP checkpoint)."""

from __future__ import annotations

import argparse

from landuse.entrypoints.common import add_config_args, guarded, load_from_args
from landuse.training.signals import kill_runs_on_sigterm


@kill_runs_on_sigterm  # SIGTERM ends the MLflow runs KILLED instead of leaving them RUNNING
def main(argv: list[str] | None = None) -> int:
    """``landuse run zeroshot --config conf/X.yaml [--method text|llm|image] [--no-mlflow] [key=value ...]``."""
    from landuse.zeroshot.run import METHODS

    parser = argparse.ArgumentParser(prog="landuse run zeroshot",
                                     description="zero-shot land use per region from POI-paragraph prompts")
    add_config_args(parser)
    parser.add_argument("--method", choices=METHODS, default=None,
                        help="text (offline sentence embeddings), llm (zeroshot.llm endpoint), image "
                             "(zeroshot.image.checkpoint); default: zeroshot.method")
    parser.add_argument("--no-mlflow", action="store_true", help="write the tables only, no MLflow run")
    args = parser.parse_args(argv)

    def body() -> int:
        from landuse.zeroshot.run import run_zeroshot

        config = load_from_args(args)
        result = run_zeroshot(config, args.method, track=not args.no_mlflow)
        counts, usage = result.manifest["counts"], result.manifest["usage"]
        print(f"zeroshot {result.method}: {counts['regions']} regions ({counts['scored']} scored, {counts['rejected']} "
              f"rejected{_reasons(counts['by_reason'])}) -> {result.table_path} and {result.geojson}")
        print("usage: " + ", ".join(f"{k} {v}" for k, v in usage.items()))
        if "accuracy" in result.metrics:
            m = result.metrics
            print(f"on {int(m['labelled_scored'])} labelled regions: accuracy {m['accuracy']:.3f}, macro-F1 "
                  f"{m['macro_f1']:.3f}, KL {m['kl']:.4f}, L1 {m['l1_sum']:.4f}, cosine {m['cosine']:.4f}")
        if result.run_id:
            print(f"MLflow run {result.run_id}")
        return 0

    return guarded(body)


def _reasons(by_reason: dict[str, int]) -> str:
    """``: no_pois 3, ...`` or nothing."""
    return (": " + ", ".join(f"{k} {v}" for k, v in by_reason.items())) if by_reason else ""
