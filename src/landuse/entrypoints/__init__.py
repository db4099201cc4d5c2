"""One module per stage, each exposing ``main(argv) -> int`` (used by jobs/, the CLI and notebooks)."""
