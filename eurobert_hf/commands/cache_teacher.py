"""`eurobert-hf cache-teacher`: run a ULD teacher once over a dataset and write its sorted probabilities to disk.

The data (prompt–completion pairs or `messages` conversations) are tokenized for the student and for the teacher as
`ULDTrainer` does, the teacher runs over them, and `--output_dir` gets Parquet shards (the tokenized rows and the
teacher cache, `--format exact` or `compact`) with a `teacher_cache.json` manifest. Train on it with
`load_teacher_cache(output_dir)` and `ULDTrainer(teacher_model=None, ...)` with the same `max_length`,
`uld_teacher_temperature` and student tokenizer (training refuses a cache built otherwise).

Many processes: `accelerate launch --num_processes N -m eurobert_hf cache-teacher ...` gives each process (one per
GPU) every N-th shard; the shards are the same as a one-process build. An interrupted build resumes when the same
command runs again: the shards already written are skipped.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM

from ..trainers.cache_format import compact_bytes_per_token
from ..trainers.cache_shards import build_teacher_cache, load_teacher_cache, process_state
from ..trainers.teacher_cache import CACHE_FORMATS
from .common import (
    CommandError,
    DataArguments,
    load_model_config,
    load_splits,
    load_tokenizer,
    parse_arguments,
    print_summary,
)


@dataclass
class CacheTeacherArguments:
    """The models, the cache format and the output folder."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "The student (only its tokenizer is loaded: the rows are tokenized for it)."}
    )
    teacher_model_name_or_path: str | None = field(default=None, metadata={"help": "The teacher causal LM."})
    teacher_revision: str | None = field(
        default=None, metadata={"help": "The teacher's revision (branch, tag or commit hash), recorded in the cache."}
    )
    teacher_tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "The teacher's tokenizer, if not the teacher's own."}
    )
    teacher_dtype: str = field(
        default="float32", metadata={"help": "The teacher's dtype: float32, bfloat16, float16 or auto."}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow the models' own code from the Hub."})
    output_dir: str | None = field(default=None, metadata={"help": "The cache folder (shards and manifest)."})
    format: str = field(
        default="compact",
        metadata={
            "help": "`compact`: the top `--head_size` probabilities and a modelled tail, 2·head_size + 2·tail_knots "
            "+ 4 bytes per answer token (100 by default). `exact`: the top `--top_k` probabilities in float32 (all "
            "of them without `--top_k`: 4 bytes × the teacher's vocabulary per token)."
        },
    )
    top_k: int | None = field(default=None, metadata={"help": "Probabilities kept per token by `--format exact`."})
    head_size: int = field(default=32, metadata={"help": "Exact leading probabilities of `--format compact`."})
    tail_knots: int = field(default=16, metadata={"help": "Tail knots of `--format compact`."})
    teacher_temperature: float = field(
        default=1.0, metadata={"help": "The teacher's softmax temperature (training's `uld_teacher_temperature`)."}
    )
    max_length: int | None = field(
        default=1024, metadata={"help": "Token limit of each side's sequence (training's `max_length`)."}
    )
    uld_alignment: str = field(
        default="positional", metadata={"help": "`positional` or `offsets` (as training's `uld_alignment`)."}
    )
    rows_per_shard: int = field(default=1000, metadata={"help": "Rows per shard: the unit of work and of resuming."})
    batch_size: int = field(default=8, metadata={"help": "Samples per teacher forward pass."})


def run(argv: Sequence[str]) -> int:
    """Runs `eurobert-hf cache-teacher` with `argv`; returns the exit status."""
    args, data, _ = parse_arguments((CacheTeacherArguments, DataArguments), argv, "eurobert-hf cache-teacher", __doc__)
    for flag in ("model_name_or_path", "teacher_model_name_or_path", "output_dir"):
        if not getattr(args, flag):
            raise CommandError(f"Pass `--{flag}`.")
    if args.format not in CACHE_FORMATS:
        raise CommandError(f"`--format` must be one of {', '.join(CACHE_FORMATS)}, got {args.format!r}.")
    if data.eval_file or data.eval_split or data.eval_split_size:
        raise CommandError(
            "cache-teacher caches one split: pass it as the training data (`--train_file` or `--train_split`) and "
            "run once per split, each into its own `--output_dir`."
        )
    state = process_state()
    remote = args.trust_remote_code
    load_model_config(args.teacher_model_name_or_path, "teacher model", remote)
    tokenizer = load_tokenizer(args.model_name_or_path, "student", remote)
    teacher_tokenizer = load_tokenizer(
        args.teacher_tokenizer_name_or_path or args.teacher_model_name_or_path, "teacher", remote
    )
    dataset, _ = load_splits(data, seed=0)
    dtype = args.teacher_dtype if args.teacher_dtype == "auto" else getattr(torch, args.teacher_dtype)
    teacher = AutoModelForCausalLM.from_pretrained(
        args.teacher_model_name_or_path, dtype=dtype, revision=args.teacher_revision, trust_remote_code=remote
    ).to(state.device)
    output_dir = build_teacher_cache(
        teacher,
        dataset,
        args.output_dir,
        processing_class=tokenizer,
        teacher_processing_class=teacher_tokenizer,
        max_length=args.max_length,
        format=args.format,
        top_k=args.top_k,
        teacher_temperature=args.teacher_temperature,
        head_size=args.head_size,
        tail_knots=args.tail_knots,
        rows_per_shard=args.rows_per_shard,
        batch_size=args.batch_size,
        alignment=args.uld_alignment,
        teacher_name_or_path=args.teacher_model_name_or_path,
        teacher_revision=args.teacher_revision,
    )
    if state.is_main_process:
        cached = load_teacher_cache(output_dir)
        tokens = sum(cached["teacher_cache_num_tokens"])
        per_token = compact_bytes_per_token(args.head_size, args.tail_knots) if args.format == "compact" else None
        print_summary(
            "eurobert-hf cache-teacher",
            [
                ("teacher", args.teacher_model_name_or_path),
                ("rows", len(cached)),
                ("teacher answer tokens", tokens),
                ("format", args.format),
                ("bytes per token", per_token if per_token is not None else "4 × kept probabilities"),
                ("processes", state.num_processes),
                ("cache folder", str(output_dir)),
            ],
        )
    return 0
