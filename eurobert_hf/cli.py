"""The `eurobert-hf` command line: `eurobert-hf {cache-teacher,demo,distill,export,finetune,pretrain} [flags]`.

Each subcommand parses its flags with `TrlParser` over the library's config dataclasses (so every `ULDConfig` or
`TrainingArguments` field is a flag and `--config file.yaml` works) and lives in `eurobert_hf.commands.<name>` (dashes
become underscores). Errors in the user's input are printed without a traceback (set `EUROBERT_HF_TRACEBACK=1` to see
it) and give exit status 1; Ctrl-C during training gives 130 with the command that resumes from the last complete
checkpoint.
"""

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from . import __version__
from .commands import CommandError, Interrupted, scoped_hub_token

COMMANDS = {
    "cache-teacher": "Run a ULD teacher once over a dataset and write its sorted probabilities (Parquet shards).",
    "demo": "The main job, offline: distil Gemma-3-270M into SmolLM2-135M-Instruct (CE vs CE + ULD) and report.",
    "distill": "Universal Logit Distillation of a causal LM from a teacher with another tokenizer.",
    "export": "Export a EuroBERT checkpoint to ONNX (dynamic batch and sequence axes, any head, optional float16).",
    "finetune": "Fine-tune EuroBERT for classification, token classification, question answering or multiple choice.",
    "pretrain": "Continue EuroBERT's masked-language-model pre-training (mask-only, packed, warmup-stable-decay).",
}
EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eurobert-hf",
        description="EuroBERT and Universal Logit Distillation for the Hugging Face ecosystem.",
        epilog="Run `eurobert-hf COMMAND --help` for the flags of a command.",
    )
    parser.add_argument("--version", action="version", version=f"eurobert-hf {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    for name, help_text in COMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else EXIT_USER_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `eurobert-hf` with `argv` (defaults to `sys.argv[1:]`) and returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    try:
        if command is None:
            _parser().parse_args(argv)
            _parser().print_help()
            return EXIT_USER_ERROR if not argv else 0
        with scoped_hub_token():
            return importlib.import_module(f"eurobert_hf.commands.{command.replace('-', '_')}").run(argv[1:])
    except SystemExit as exit_:
        return _exit_status(exit_.code)
    except Interrupted as interruption:
        print(f"eurobert-hf {command}: {interruption}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"eurobert-hf {command}: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CommandError, ValueError, OSError) as error:
        if os.environ.get("EUROBERT_HF_TRACEBACK"):
            raise
        print(f"eurobert-hf {command}: error: {error}", file=sys.stderr)
        if not isinstance(error, CommandError):
            print("(set EUROBERT_HF_TRACEBACK=1 to see where it came from)", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
