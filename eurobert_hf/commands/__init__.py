"""The `eurobert-hf` subcommands; each module has a `run(argv) -> int` (their one-line help is in `eurobert_hf.cli`).

The exceptions live here, away from the commands' heavy imports, so that `eurobert-hf --help` stays quick.
"""

import contextlib
import os
from collections.abc import Iterator

# Where a command puts `--hub_token` for the Hub client (see `common.parse_arguments`): the environment variable that
# `huggingface_hub` reads for every call, the Trainer's own included.
HUB_TOKEN_VARIABLE = "HF_TOKEN"


class CommandError(Exception):
    """A problem with the user's input: `eurobert-hf` prints the message (no traceback) and exits with status 1."""


class Interrupted(Exception):
    """Training was interrupted (Ctrl-C); the message says how to resume."""


@contextlib.contextmanager
def scoped_hub_token() -> Iterator[None]:
    """Restores `HF_TOKEN` after a command, which sets it from `--hub_token` for its own Hub calls."""
    previous = os.environ.get(HUB_TOKEN_VARIABLE)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(HUB_TOKEN_VARIABLE, None)
        else:
            os.environ[HUB_TOKEN_VARIABLE] = previous


__all__ = ["HUB_TOKEN_VARIABLE", "CommandError", "Interrupted", "scoped_hub_token"]
