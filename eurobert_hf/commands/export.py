"""`eurobert-hf export`: a EuroBERT checkpoint to ONNX (dynamic batch and sequence axes, any head, optional float16).

The output folder holds `model.onnx`, the model's `config.json` and the tokenizer's files, written atomically. The graph
takes `input_ids` and `attention_mask` and returns `logits` (or `last_hidden_state`, or `start_logits`/`end_logits`).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoTokenizer

from ..export import ONNX_OUTPUT_NAMES, export_onnx
from ..hub import EUROBERT_TASKS, eurobert_task
from ..modeling import modeling_eurobert
from .common import CommandError, load_model_config, note, parse_command_line

FORMATS = ("onnx",)
TASKS = tuple(ONNX_OUTPUT_NAMES)


@dataclass
class ExportArguments:
    """What to export, to which format and where."""

    model_name_or_path: str = field(metadata={"help": "A EuroBERT checkpoint: local folder or Hub name."})
    output_dir: str = field(metadata={"help": "The folder that receives model.onnx, config.json and the tokenizer."})
    format: str = field(default="onnx", metadata={"help": "The export format.", "choices": list(FORMATS)})
    task: str | None = field(
        default=None,
        metadata={
            "help": "The head to export; defaults to the checkpoint's own (`architectures` in its config.json). "
            "`feature-extraction` exports the bare encoder (`last_hidden_state`).",
            "choices": list(TASKS),
        },
    )
    fp16: bool = field(default=False, metadata={"help": "Export in float16 (half the size; for GPUs)."})
    opset_version: int | None = field(default=None, metadata={"help": "The ONNX opset (the exporter's default)."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace a non-empty `output_dir` (its previous files are removed)."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow the checkpoint's own model code."})


def _task(args: ExportArguments, architectures: Sequence[str] | None) -> str:
    if args.task is not None:
        return args.task
    for architecture in architectures or ():
        try:
            return eurobert_task(architecture)
        except ValueError:
            continue
    raise CommandError(
        f"The config of {args.model_name_or_path!r} names no EuroBERT head (architectures: {architectures}); choose "
        f"one with `--task` ({', '.join(TASKS)})."
    )


def run(argv: Sequence[str]) -> int:
    """Runs `eurobert-hf export` with `argv`; returns the exit status."""
    (args,) = parse_command_line([ExportArguments], argv, "eurobert-hf export", __doc__)
    config = load_model_config(args.model_name_or_path, "model", args.trust_remote_code)
    if config.model_type != "eurobert":
        raise CommandError(
            f"`export` exports EuroBERT, but {args.model_name_or_path!r} is a {config.model_type!r} model. Export "
            "other models with `optimum-cli export onnx`."
        )
    task = _task(args, getattr(config, "architectures", None))
    model_class = getattr(modeling_eurobert, EUROBERT_TASKS[task][0])
    output_dir = Path(args.output_dir)
    if output_dir.is_dir() and any(output_dir.iterdir()) and not args.overwrite_output_dir:
        raise CommandError(
            f"The output folder {args.output_dir!r} is not empty. Pass `--overwrite_output_dir` to replace it "
            "(its files are removed), or choose another `--output_dir`."
        )
    # float32 whatever the checkpoint's dtype (ONNX Runtime's CPU kernels have no bfloat16); `--fp16` converts.
    model = model_class.from_pretrained(args.model_name_or_path, dtype=torch.float32, attn_implementation="sdpa")
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    except (OSError, ValueError, KeyError):  # transformers 4.56 raises KeyError for a folder with no tokenizer files
        tokenizer = None
        note(f"{args.model_name_or_path!r} has no tokenizer; the output folder gets the model and its config only.")
    path = export_onnx(
        model,
        output_dir,
        tokenizer=tokenizer,
        fp16=args.fp16,
        opset_version=args.opset_version,
        overwrite=args.overwrite_output_dir,
    )
    print(f"Exported {task} ({'float16' if args.fp16 else 'float32'}) to {path}")
    return 0
