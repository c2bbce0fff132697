"""The `eurobert-hf` subcommands; each module has a `run(argv) -> int` and a one-line `HELP`."""
