"""Teacher cache for ULD: run the teacher once, store what ULD needs from it, train with no teacher in memory.

ULD only needs, per answer token, the teacher's probabilities *sorted in decreasing order*: not the token ids, not the
logits. [`cache_teacher_probs`] runs the teacher over a prepared ULD dataset (`input_ids`, `labels`,
`teacher_input_ids`, `teacher_labels`, as built by `prepare_uld_dataset`) and adds, per predicted teacher answer token
(`teacher_labels[1:] != -100`), in one of two formats:

- `format="exact"`: `teacher_topk_probs` (`list[list[float32]]`, the top-k probabilities, decreasing; the whole
  vocabulary with `top_k=None`) and `teacher_remaining_mass` (`list[float32]`, the mass of the rest). With `top_k >=
  vocabulary` the loss on it equals the live-teacher loss.
- `format="compact"` (`eurobert_hf.trainers.cache_format`): `teacher_head_probs` (the top `head_size` in float16),
  `teacher_tail_knots` (log-probabilities at `tail_knots` log-spaced ranks, float16) and `teacher_remaining_mass` (the
  exact mass beyond the head): `2 · head_size + 2 · tail_knots + 4` bytes per token (100 by default), the whole sorted
  vector rebuilt when training.

Every row also records what the cache was built from (`eurobert_hf.trainers.cache_integrity`): the settings, the
tokenizers' fingerprints, `max_length`, the teacher's name and revision, and hashes of the row's token ids. At training,
[`check_teacher_cache`] compares the settings with the run's [`TeacherCacheRequirements`], and [`TeacherCacheCollator`]
checks every row it batches (which covers streamed datasets whose later rows differ) before
[`teacher_probs_from_batch`] turns the batch into the `SortedTeacherProbs` that `uld_loss` and `offsets_uld_loss`
accept in place of teacher logits. The sorting is `uld_loss.sort_teacher_probs`, the same code the live path uses.
`eurobert_hf.trainers.cache_shards` writes a cache as Parquet shards, from one process or many.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from datasets import Dataset, IterableDataset, Sequence, Value
from transformers import PreTrainedTokenizerBase, ProcessorMixin

from .cache_format import decode_compact, encode_compact
from .cache_integrity import (
    ROW_COLUMNS,
    SETTINGS_COLUMN,
    TeacherCacheRequirements,
    parse_settings,
    row_mismatch,
    row_record,
    settings_mismatch,
    tokenizer_fingerprint,
)
from .uld_losses import SortedTeacherProbs, sort_teacher_probs

__all__ = [
    "CACHE_COLUMNS",
    "CACHE_FORMATS",
    "TeacherCacheCollator",
    "TeacherCacheRequirements",
    "cache_teacher_probs",
    "check_teacher_cache",
    "collate_teacher_cache",
    "has_teacher_cache",
    "teacher_probs_from_batch",
]

CACHE_FORMATS = ("exact", "compact")
_VALUE_COLUMNS = {
    "exact": ("teacher_topk_probs", "teacher_remaining_mass"),
    "compact": ("teacher_head_probs", "teacher_tail_knots", "teacher_remaining_mass"),
}
# Every column the cache collator reads (a trainer must not drop them).
CACHE_COLUMNS = tuple(
    dict.fromkeys([*_VALUE_COLUMNS["exact"], *_VALUE_COLUMNS["compact"], SETTINGS_COLUMN, *ROW_COLUMNS])
)
_INPUT_COLUMNS = ("input_ids", "labels", "teacher_input_ids", "teacher_labels")
_UNKNOWN = object()


def _model_device(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _pad(sequences: list[list[int]], value: int, length: int) -> torch.Tensor:
    return torch.tensor([list(s) + [value] * (length - len(s)) for s in sequences], dtype=torch.long)


def _validate_build(
    dataset: Dataset,
    batch_size: int,
    top_k: int | None,
    teacher_temperature: float,
    format: str,
    head_size: int,
    tail_knots: int,
) -> None:
    if not isinstance(dataset, Dataset):
        raise ValueError(
            f"cache_teacher_probs needs a map-style `datasets.Dataset`, got {type(dataset).__name__} (an iterable "
            "dataset would run the teacher again at every pass, which is what the cache avoids)."
        )
    missing = [column for column in _INPUT_COLUMNS if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"The dataset lacks the columns {missing}. Prepare it for ULD first (the trainer's `prepare_uld_dataset`, "
            "which tokenizes each sample for both models), then cache the teacher on the prepared dataset."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None (whole vocabulary) or an integer >= 1, got {top_k!r}.")
    if (
        isinstance(teacher_temperature, bool)
        or not isinstance(teacher_temperature, (int, float))
        or not math.isfinite(teacher_temperature)
        or teacher_temperature <= 0
    ):
        raise ValueError(f"teacher_temperature must be a number > 0, got {teacher_temperature!r}.")
    if format not in CACHE_FORMATS:
        raise ValueError(f"format must be one of {CACHE_FORMATS}, got {format!r}.")
    for name, value, least in (("head_size", head_size, 1), ("tail_knots", tail_knots, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}.")


def _cache_features(dataset: Dataset, format: str, head_size: int, tail_knots: int):
    features = dataset.features.copy()
    if format == "exact":
        features["teacher_topk_probs"] = Sequence(Sequence(Value("float32")))
    else:
        features["teacher_head_probs"] = Sequence(Sequence(Value("float16"), length=head_size))
        features["teacher_tail_knots"] = Sequence(Sequence(Value("float16"), length=tail_knots))
    features["teacher_remaining_mass"] = Sequence(Value("float32"))
    features[SETTINGS_COLUMN] = Value("string")
    features["teacher_cache_num_tokens"] = Value("int32")
    features["teacher_cache_teacher_ids_hash"] = Value("int64")
    features["teacher_cache_student_ids_hash"] = Value("int64")
    return features


def cache_teacher_probs(
    teacher_model: torch.nn.Module,
    dataset: Dataset,
    *,
    top_k: int | None = None,
    teacher_temperature: float = 1.0,
    batch_size: int = 8,
    pad_token_id: int | None = None,
    ignore_index: int = -100,
    format: str = "exact",
    head_size: int = 32,
    tail_knots: int = 16,
    processing_class: PreTrainedTokenizerBase | ProcessorMixin | None = None,
    teacher_processing_class: PreTrainedTokenizerBase | ProcessorMixin | None = None,
    max_length: Any = _UNKNOWN,
    teacher_name_or_path: str | None = None,
    teacher_revision: str | None = None,
) -> Dataset:
    """
    Runs the teacher once over a prepared ULD dataset and returns it with the teacher-cache columns added (see the
    module docstring). The other columns are kept, so the result trains with `ULDTrainer(teacher_model=None)`.

    Args:
        teacher_model (`torch.nn.Module`):
            The teacher causal LM (called as `teacher_model(input_ids=..., attention_mask=...).logits`); it runs in
            eval mode without gradients on its own device, and its train/eval mode is restored afterwards.
        dataset ([`~datasets.Dataset`]):
            Dataset with `input_ids`, `labels`, `teacher_input_ids` and `teacher_labels` columns
            (`prepare_uld_dataset`'s output).
        top_k (`int` or `None`, *optional*):
            `format="exact"`: number of sorted probabilities kept per answer token; `None` keeps the whole vocabulary
            (exact, but `vocab_size` floats per token). With `top_k >= vocab_size` the cache is exact too. Not used by
            the compact format.
        teacher_temperature (`float`, *optional*, defaults to `1.0`):
            Softmax temperature applied before sorting; training must use the same `uld_teacher_temperature`.
        batch_size (`int`, *optional*, defaults to `8`):
            Samples per teacher forward pass.
        pad_token_id (`int`, *optional*):
            Id used to pad `teacher_input_ids` (masked out by the attention mask); defaults to the model config's
            `pad_token_id`, else 0.
        ignore_index (`int`, *optional*, defaults to `-100`):
            Label value of non-answer positions.
        format (`str`, *optional*, defaults to `"exact"`):
            `"exact"` or `"compact"` (see the module docstring).
        head_size (`int`, *optional*, defaults to `32`), tail_knots (`int`, *optional*, defaults to `16`):
            Parameters of the compact format.
        processing_class, teacher_processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            The student's and the teacher's tokenizers that prepared `dataset`: their fingerprints are recorded, and
            training with other tokenizers is refused. Pass them (a cache without them cannot be checked for it).
        max_length (`int` or `None`, *optional*):
            The `max_length` `dataset` was prepared with (None: no truncation), recorded and checked against the
            trainer's. Not recorded when not given.
        teacher_name_or_path (`str`, *optional*):
            The teacher's name, recorded; defaults to `teacher_model.name_or_path`.
        teacher_revision (`str`, *optional*):
            The teacher's revision (a commit hash where known), recorded.

    Returns:
        [`~datasets.Dataset`]: the dataset with the cache columns of `format`, `teacher_cache_settings`,
        `teacher_cache_num_tokens`, `teacher_cache_teacher_ids_hash` and `teacher_cache_student_ids_hash`.
    """
    _validate_build(dataset, batch_size, top_k, teacher_temperature, format, head_size, tail_knots)
    if pad_token_id is None:
        pad_token_id = getattr(getattr(teacher_model, "config", None), "pad_token_id", None)
        pad_token_id = 0 if pad_token_id is None else pad_token_id
    device = _model_device(teacher_model)
    record = {
        "format": format,
        "temperature": float(teacher_temperature),
        "teacher": teacher_name_or_path or getattr(teacher_model, "name_or_path", None) or None,
        "teacher_revision": teacher_revision,
        "student_tokenizer": None if processing_class is None else tokenizer_fingerprint(processing_class),
        "teacher_tokenizer": (
            None if teacher_processing_class is None else tokenizer_fingerprint(teacher_processing_class)
        ),
    }
    if format == "compact":
        record |= {"head_size": head_size, "tail_knots": tail_knots}
    if max_length is not _UNKNOWN:
        record["max_length"] = max_length

    def add_cache(batch: dict[str, list]) -> dict[str, list]:
        input_ids, labels = batch["teacher_input_ids"], batch["teacher_labels"]
        size = len(input_ids)
        length = max(len(ids) for ids in input_ids)
        attention_mask = _pad([[1] * len(ids) for ids in input_ids], 0, length)
        logits = teacher_model(
            input_ids=_pad(input_ids, pad_token_id, length).to(device), attention_mask=attention_mask.to(device)
        ).logits
        padded_labels = _pad(labels, ignore_index, length).to(device)
        vocab_size = logits.shape[-1]
        columns: dict[str, list] = {"teacher_remaining_mass": []}
        if format == "exact":
            sorted_probs = sort_teacher_probs(
                logits, padded_labels, temperature=float(teacher_temperature), top_k=top_k, ignore_index=ignore_index
            )
            values = sorted_probs.values.float().cpu()
            remaining = sorted_probs.remaining_mass.float().cpu()
            counts = sorted_probs.num_tokens.tolist()
            columns["teacher_topk_probs"] = [values[b, : counts[b]].tolist() for b in range(size)]
            columns["teacher_remaining_mass"] = [remaining[b, : counts[b]].tolist() for b in range(size)]
            settings = record | {"top_k": values.shape[-1], "vocab_size": vocab_size}
        else:
            columns["teacher_head_probs"], columns["teacher_tail_knots"], counts = [], [], []
            for b in range(size):
                # One sample at a time: the full sorted rows take answer tokens × vocabulary floats.
                full = sort_teacher_probs(
                    logits[b : b + 1], padded_labels[b : b + 1], temperature=float(teacher_temperature)
                )
                count = int(full.num_tokens[0])
                head, knots, tail_mass = encode_compact(full.values[0, :count].cpu(), head_size, tail_knots)
                columns["teacher_head_probs"].append(head.tolist())
                columns["teacher_tail_knots"].append(knots.tolist())
                columns["teacher_remaining_mass"].append(tail_mass.tolist())
                counts.append(count)
            settings = record | {"top_k": head_size, "vocab_size": vocab_size}
        columns[SETTINGS_COLUMN] = [json.dumps(settings, sort_keys=True)] * size
        rows = [row_record({key: batch[key][b] for key in _INPUT_COLUMNS}, counts[b]) for b in range(size)]
        for column in ROW_COLUMNS:
            columns[column] = [row[column] for row in rows]
        return columns

    was_training = teacher_model.training
    teacher_model.eval()
    try:
        with torch.inference_mode():
            return dataset.map(
                add_cache,
                batched=True,
                batch_size=batch_size,
                features=_cache_features(dataset, format, head_size, tail_knots),
                # A fresh fingerprint spares `datasets` from hashing the teacher's weights (it pickles the function).
                new_fingerprint=uuid.uuid4().hex,
                load_from_cache_file=False,
                desc="Caching teacher probabilities",
            )
    finally:
        teacher_model.train(was_training)


def _columns(dataset: Dataset | IterableDataset) -> list[str]:
    return dataset.column_names if dataset.column_names is not None else list(next(iter(dataset)).keys())


def _cache_format(columns: list[str]) -> str | None:
    for format, value_columns in _VALUE_COLUMNS.items():
        if all(column in columns for column in (*value_columns, SETTINGS_COLUMN, *ROW_COLUMNS)):
            return format
    return None


def has_teacher_cache(dataset: Dataset | IterableDataset) -> bool:
    """Whether `dataset` holds the columns written by [`cache_teacher_probs`] (in either format)."""
    return _cache_format(_columns(dataset)) is not None


def check_teacher_cache(
    dataset: Dataset | IterableDataset, requirements: TeacherCacheRequirements, *, dataset_name: str = "train"
) -> None:
    """
    Raises a `ValueError` naming what does not match when the teacher cache of `dataset` cannot reproduce training
    with `requirements`: columns missing, rows built with other settings (temperature, a top-k smaller than asked,
    `max_length`, another student or teacher tokenizer, another teacher), rows whose token ids are not those the cache
    was built from. A map-style dataset is checked completely (settings and the ids of every row, not the cached
    values); an iterable one by its first row, and [`TeacherCacheCollator`] checks every row as it is batched.
    """
    columns = _columns(dataset)
    if _cache_format(columns) is None:
        expected = {
            format: [*value_columns, SETTINGS_COLUMN, *ROW_COLUMNS] for format, value_columns in _VALUE_COLUMNS.items()
        }
        raise ValueError(
            f"The {dataset_name} dataset has no complete teacher cache (columns {expected['exact']}, or "
            f"{expected['compact']} for the compact format). Build it with `cache_teacher_probs(teacher_model, "
            "prepared_dataset, ...)` (or `eurobert-hf cache-teacher`), or pass a teacher model."
        )
    if isinstance(dataset, Dataset):
        all_settings = dataset.unique(SETTINGS_COLUMN)
    else:
        all_settings = [next(iter(dataset))[SETTINGS_COLUMN]]
    if len(all_settings) > 1:
        raise ValueError(
            f"The rows of the {dataset_name} dataset's teacher cache were built with different settings: "
            f"{[parse_settings(settings) for settings in all_settings]}. Build the whole cache with one setting."
        )
    problem = settings_mismatch(parse_settings(all_settings[0]), requirements)
    if problem:
        raise ValueError(f"The teacher cache of the {dataset_name} dataset does not fit this training run: {problem}")
    if isinstance(dataset, Dataset):
        ids = dataset.select_columns([*_INPUT_COLUMNS, *ROW_COLUMNS])
        for index, example in enumerate(ids):
            problem = row_mismatch(example, example["teacher_cache_num_tokens"], np.empty(0))
            if problem:
                raise ValueError(f"Row {index} of the {dataset_name} dataset's teacher cache does not fit: {problem}.")


def _cached_arrays(example: dict[str, Any], format: str) -> tuple[list[np.ndarray], np.ndarray]:
    """The value arrays of one cached row (format's columns, in order) and each token's total probability mass."""
    arrays = [
        np.asarray(
            example[column],
            dtype=np.float16 if format == "compact" and column != "teacher_remaining_mass" else np.float32,
        )
        for column in _VALUE_COLUMNS[format]
    ]
    head, remaining = arrays[0], arrays[-1]
    masses = head.astype(np.float64).sum(axis=-1) + remaining if remaining.size else np.empty(0)
    return arrays, masses


def collate_teacher_cache(
    examples: list[dict[str, Any]], requirements: TeacherCacheRequirements | None = None
) -> dict[str, torch.Tensor]:
    """
    Checks every row of `examples` (its settings against `requirements` when given, its token counts, ids hashes and
    probability masses; a `ValueError` names what does not fit) and batches the teacher-cache columns:

    - exact: `teacher_topk_probs` `(batch, max_tokens, k)` float32 and `teacher_remaining_mass` `(batch, max_tokens)`;
    - compact: `teacher_head_probs` `(batch, max_tokens, head_size)` and `teacher_tail_knots` `(batch, max_tokens,
      tail_knots)` float16, `teacher_remaining_mass` `(batch, max_tokens)` and `teacher_vocab_size` `(batch,)`;

    zero-padded, and `teacher_num_tokens` `(batch,)`.
    """
    settings_strings = {example[SETTINGS_COLUMN] for example in examples}
    for settings in settings_strings:
        problem = requirements and settings_mismatch(parse_settings(settings), requirements)
        if problem:
            raise ValueError(f"A row of this batch comes from a teacher cache that does not fit this run: {problem}")
    shapes = {
        (parse_settings(s)["format"], parse_settings(s)["top_k"], parse_settings(s).get("tail_knots"))
        for s in settings_strings
    }
    if len(shapes) != 1:
        raise ValueError(f"The teacher-cache rows of a batch were stored differently: {sorted(shapes, key=str)}.")
    format, width, knots = shapes.pop()
    vocab_size = parse_settings(next(iter(settings_strings)))["vocab_size"]
    rows = []
    for index, example in enumerate(examples):
        arrays, masses = _cached_arrays(example, format)
        problem = row_mismatch(example, len(arrays[-1]), masses)
        if problem:
            raise ValueError(f"Row {index} of this batch does not fit its teacher cache: {problem}.")
        rows.append(arrays)
    counts = [len(arrays[-1]) for arrays in rows]
    max_tokens = max(counts, default=0)
    size = len(examples)
    remaining = torch.zeros(size, max_tokens, dtype=torch.float32)
    if format == "exact":
        values = torch.zeros(size, max_tokens, width, dtype=torch.float32)
        batch = {"teacher_topk_probs": values}
    else:
        values = torch.zeros(size, max_tokens, width, dtype=torch.float16)
        tail = torch.zeros(size, max_tokens, knots, dtype=torch.float16)
        batch = {"teacher_head_probs": values, "teacher_tail_knots": tail}
        batch["teacher_vocab_size"] = torch.full((size,), vocab_size, dtype=torch.long)
    for index, arrays in enumerate(rows):
        if counts[index]:
            values[index, : counts[index]] = torch.from_numpy(arrays[0])
            remaining[index, : counts[index]] = torch.from_numpy(arrays[-1])
            if format == "compact":
                tail[index, : counts[index]] = torch.from_numpy(arrays[1])
    batch["teacher_remaining_mass"] = remaining
    batch["teacher_num_tokens"] = torch.tensor(counts, dtype=torch.long)
    return batch


def teacher_probs_from_batch(batch: dict[str, torch.Tensor], width: int | None = None) -> SortedTeacherProbs:
    """
    The [`SortedTeacherProbs`] of a batch collated by [`collate_teacher_cache`] / [`TeacherCacheCollator`], on the
    batch's device. A compact cache is rebuilt there.

    Args:
        batch (`dict[str, torch.Tensor]`):
            The collated batch.
        width (`int`, *optional*):
            Keep at most this many sorted values per token, the others' mass added to the remaining mass. The ULD loss
            compares no more than the student's vocabulary size (or `uld_top_k`) of them, so passing that width gives
            the same loss with less memory.
    """
    num_tokens = batch["teacher_num_tokens"]
    if "teacher_head_probs" in batch:
        vocab_sizes = batch["teacher_vocab_size"]
        vocab_size = int(vocab_sizes[0]) if vocab_sizes.numel() else batch["teacher_head_probs"].shape[-1]
        values, remaining = decode_compact(
            batch["teacher_head_probs"],
            batch["teacher_tail_knots"],
            batch["teacher_remaining_mass"],
            vocab_size,
            width,
        )
        return SortedTeacherProbs(values, remaining, num_tokens)
    values, remaining = batch["teacher_topk_probs"], batch["teacher_remaining_mass"]
    if width is not None and values.shape[-1] > width:
        remaining = remaining + values[..., width:].sum(dim=-1)
        values = values[..., :width]
    return SortedTeacherProbs(values, remaining, num_tokens)


class TeacherCacheCollator:
    """
    Wraps a ULD data collator (e.g. `ULDDataCollator`) and adds the batched teacher cache (see
    [`collate_teacher_cache`]) to each batch, after checking every row.

    Args:
        collator (`Callable[[list[dict]], dict[str, torch.Tensor]]`):
            The collator of the other columns.
        requirements ([`TeacherCacheRequirements`], *optional*):
            What the training run needs; every row's settings are compared with it.
    """

    def __init__(
        self,
        collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
        requirements: TeacherCacheRequirements | None = None,
    ):
        self.collator = collator
        self.requirements = requirements

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.collator(examples)
        batch.update(collate_teacher_cache(examples, self.requirements))
        return batch
