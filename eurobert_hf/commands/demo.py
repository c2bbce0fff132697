"""`eurobert-hf demo`: the main job, offline, on real models.

Gemma-3-270M (base, SentencePiece 262k vocabulary) answers multilingual prompts few-shot; SmolLM2-135M-Instruct
(byte-level BPE 49k) is trained on those answers with CE only and with CE + ULD from the same start; both are scored
on held-out prompts (ROUGE-L, token-F1 against the teacher's answers) before and after training. The output folder
gets the table, a plot with the training curves and both students as Hub-ready folders. `--quick` runs the same
pipeline on fewer prompts (the CI size).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

from .common import CommandError, parse_command_line, print_summary


@dataclass
class DemoArguments:
    """Where the demo writes its results, its size and its seed."""

    output_dir: str = field(
        default="eurobert-hf-demo", metadata={"help": "Folder for the table, the plot and the two students."}
    )
    quick: bool = field(default=False, metadata={"help": "Run the same pipeline on fewer prompts (CI size)."})
    seed: int = field(default=0, metadata={"help": "Seed of the prompt split and of both training runs."})
    cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where the converted models are cached (default: $EUROBERT_HF_CACHE or ~/.cache/eurobert_hf)."
        },
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace a non-empty `output_dir`."})


def run(argv: Sequence[str]) -> int:
    """Runs `eurobert-hf demo` with `argv`; returns the exit status."""
    (args,) = parse_command_line([DemoArguments], argv, "eurobert-hf demo", __doc__)
    from ..demo.pipeline import run_demo

    try:
        result = run_demo(
            args.output_dir,
            quick=args.quick,
            seed=args.seed,
            cache_dir=args.cache_dir,
            overwrite=args.overwrite_output_dir,
        )
    except FileExistsError:
        raise CommandError(
            f"The output folder {args.output_dir!r} is not empty. Pass `--overwrite_output_dir` to replace it or "
            "choose another `--output_dir`."
        ) from None
    except (ImportError, RuntimeError) as error:
        raise CommandError(str(error)) from None
    rows = [
        (f"{stage} {metric} (overall)", value)
        for stage, by_language in result.scores.items()
        for metric, value in by_language.get("overall", {}).items()
    ]
    rows += [(f"{name} student", str(path)) for name, path in result.students.items()]
    rows += [(name, str(path)) for name, path in result.report.items()]
    rows.append(("minutes", sum(result.timings.values()) / 60))
    print_summary(f"eurobert-hf demo{' --quick' if args.quick else ''}", rows)
    return 0
