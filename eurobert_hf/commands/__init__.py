"""The `eurobert-hf` subcommands; each module has a `run(argv) -> int` (their one-line help is in `eurobert_hf.cli`).

The exceptions live here, away from the commands' heavy imports, so that `eurobert-hf --help` stays quick.
"""


class CommandError(Exception):
    """A problem with the user's input: `eurobert-hf` prints the message (no traceback) and exits with status 1."""


class Interrupted(Exception):
    """Training was interrupted (Ctrl-C); the message says how to resume."""


__all__ = ["CommandError", "Interrupted"]
