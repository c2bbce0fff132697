"""Teacher cache for ULD: run the teacher once, store what ULD needs from it, train with no teacher in memory.

ULD only needs, per answer token, the teacher's probabilities *sorted in decreasing order*: not the token ids, not the
logits. [`cache_teacher_probs`] runs the teacher over a prepared ULD dataset (`teacher_input_ids`, `teacher_labels`,
as built by `prepare_uld_dataset`) and adds, per predicted teacher answer token (`teacher_labels[1:] != -100`):

- `teacher_topk_probs` (`list[list[float32]]`): the top-k probabilities (softmax of logits / temperature), decreasing;
- `teacher_remaining_mass` (`list[float32]`): the probability mass of the rest of the vocabulary;
- `teacher_cache_top_k`, `teacher_cache_temperature`, `teacher_cache_vocab_size`: the settings, stored on every row so
  that they survive any `datasets` transform; [`check_teacher_cache`] compares them with the training config.

With `top_k >= vocabulary` the cache is complete and the loss on it equals the live-teacher loss. The sorting is
`uld_loss.sort_teacher_probs`, the same code the live path uses. In training, [`TeacherCacheCollator`] batches the
columns and [`teacher_probs_from_batch`] turns the batch into the `SortedTeacherProbs` that `uld_loss` and
`offsets_uld_loss` accept in place of teacher logits.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from typing import Any

import torch
from datasets import Dataset, IterableDataset, Sequence, Value

from .uld_losses import SortedTeacherProbs, sort_teacher_probs

__all__ = [
    "CACHE_COLUMNS",
    "TeacherCacheCollator",
    "cache_teacher_probs",
    "check_teacher_cache",
    "collate_teacher_cache",
    "has_teacher_cache",
    "teacher_probs_from_batch",
]

CACHE_COLUMNS = ("teacher_topk_probs", "teacher_remaining_mass")
_SETTINGS_COLUMNS = ("teacher_cache_top_k", "teacher_cache_temperature", "teacher_cache_vocab_size")
_INPUT_COLUMNS = ("teacher_input_ids", "teacher_labels")


def _model_device(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _pad(sequences: list[list[int]], value: int, length: int) -> torch.Tensor:
    return torch.tensor([list(s) + [value] * (length - len(s)) for s in sequences], dtype=torch.long)


def cache_teacher_probs(
    teacher_model: torch.nn.Module,
    dataset: Dataset,
    *,
    top_k: int | None,
    teacher_temperature: float = 1.0,
    batch_size: int = 8,
    pad_token_id: int | None = None,
    ignore_index: int = -100,
) -> Dataset:
    """
    Runs the teacher once over a prepared ULD dataset and returns it with the teacher-cache columns added (see the
    module docstring). The other columns are kept, so the result trains with `ULDTrainer(teacher_model=None)`.

    Args:
        teacher_model (`torch.nn.Module`):
            The teacher causal LM (called as `teacher_model(input_ids=..., attention_mask=...).logits`); it runs in
            eval mode without gradients on its own device, and its train/eval mode is restored afterwards.
        dataset ([`~datasets.Dataset`]):
            Dataset with `teacher_input_ids` and `teacher_labels` columns (`prepare_uld_dataset`'s output).
        top_k (`int` or `None`):
            Number of sorted probabilities kept per answer token; `None` keeps the whole vocabulary (exact, but
            `vocab_size` floats per token). With `top_k >= vocab_size` the cache is exact too.
        teacher_temperature (`float`, *optional*, defaults to `1.0`):
            Softmax temperature applied before sorting; training must use the same `uld_teacher_temperature`.
        batch_size (`int`, *optional*, defaults to `8`):
            Samples per teacher forward pass.
        pad_token_id (`int`, *optional*):
            Id used to pad `teacher_input_ids` (masked out by the attention mask); defaults to the model config's
            `pad_token_id`, else 0.
        ignore_index (`int`, *optional*, defaults to `-100`):
            Label value of non-answer positions.

    Returns:
        [`~datasets.Dataset`]: the dataset with the columns `teacher_topk_probs`, `teacher_remaining_mass`,
        `teacher_cache_top_k`, `teacher_cache_temperature` and `teacher_cache_vocab_size`.
    """
    if not isinstance(dataset, Dataset):
        raise ValueError(
            f"cache_teacher_probs needs a map-style `datasets.Dataset`, got {type(dataset).__name__} (an iterable "
            "dataset would run the teacher again at every pass, which is what the cache avoids)."
        )
    missing = [column for column in _INPUT_COLUMNS if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"The dataset lacks the columns {missing}. Prepare it for ULD first (the trainer's `prepare_uld_dataset`, "
            "which tokenizes each sample for the teacher), then cache the teacher on the prepared dataset."
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
    if pad_token_id is None:
        pad_token_id = getattr(getattr(teacher_model, "config", None), "pad_token_id", None)
        pad_token_id = 0 if pad_token_id is None else pad_token_id
    device = _model_device(teacher_model)

    def add_cache(batch: dict[str, list]) -> dict[str, list]:
        input_ids, labels = batch["teacher_input_ids"], batch["teacher_labels"]
        length = max(len(ids) for ids in input_ids)
        attention_mask = _pad([[1] * len(ids) for ids in input_ids], 0, length)
        logits = teacher_model(
            input_ids=_pad(input_ids, pad_token_id, length).to(device), attention_mask=attention_mask.to(device)
        ).logits
        sorted_probs = sort_teacher_probs(
            logits,
            _pad(labels, ignore_index, length).to(device),
            temperature=float(teacher_temperature),
            top_k=top_k,
            ignore_index=ignore_index,
        )
        values = sorted_probs.values.float().cpu()
        remaining = sorted_probs.remaining_mass.float().cpu()
        counts = sorted_probs.num_tokens.tolist()
        size = len(input_ids)
        return {
            "teacher_topk_probs": [values[b, : counts[b]].tolist() for b in range(size)],
            "teacher_remaining_mass": [remaining[b, : counts[b]].tolist() for b in range(size)],
            "teacher_cache_top_k": [values.shape[-1]] * size,
            "teacher_cache_temperature": [float(teacher_temperature)] * size,
            "teacher_cache_vocab_size": [logits.shape[-1]] * size,
        }

    features = dataset.features.copy()
    features["teacher_topk_probs"] = Sequence(Sequence(Value("float32")))
    features["teacher_remaining_mass"] = Sequence(Value("float32"))
    features["teacher_cache_top_k"] = Value("int64")
    features["teacher_cache_temperature"] = Value("float64")
    features["teacher_cache_vocab_size"] = Value("int64")
    was_training = teacher_model.training
    teacher_model.eval()
    try:
        with torch.inference_mode():
            return dataset.map(
                add_cache,
                batched=True,
                batch_size=batch_size,
                features=features,
                # A fresh fingerprint spares `datasets` from hashing the teacher's weights (it pickles the function).
                new_fingerprint=uuid.uuid4().hex,
                load_from_cache_file=False,
                desc="Caching teacher probabilities",
            )
    finally:
        teacher_model.train(was_training)


def has_teacher_cache(dataset: Dataset | IterableDataset) -> bool:
    """Whether `dataset` holds the columns written by [`cache_teacher_probs`]."""
    columns = dataset.column_names if dataset.column_names is not None else list(next(iter(dataset)).keys())
    return all(column in columns for column in CACHE_COLUMNS + _SETTINGS_COLUMNS)


def _settings(dataset: Dataset | IterableDataset, column: str) -> list:
    if isinstance(dataset, Dataset):
        return dataset.unique(column)
    return [next(iter(dataset))[column]]


def check_teacher_cache(
    dataset: Dataset | IterableDataset, *, top_k: int | None, teacher_temperature: float, dataset_name: str = "train"
) -> None:
    """
    Raises a `ValueError` when the teacher cache of `dataset` cannot reproduce training with `top_k` and
    `teacher_temperature` (the trainer's `uld_top_k` and `uld_teacher_temperature`): columns missing, another
    temperature, or fewer cached probabilities than `top_k` asks for (unless the cache covers the whole vocabulary).
    """
    if not has_teacher_cache(dataset):
        raise ValueError(
            f"The {dataset_name} dataset has no teacher cache (columns {list(CACHE_COLUMNS + _SETTINGS_COLUMNS)}). "
            "Build it with `cache_teacher_probs(teacher_model, prepared_dataset, top_k=..., teacher_temperature=...)`, "
            "or pass a teacher model."
        )
    temperatures = _settings(dataset, "teacher_cache_temperature")
    if any(not math.isclose(t, teacher_temperature, rel_tol=1e-9) for t in temperatures):
        raise ValueError(
            f"The teacher cache of the {dataset_name} dataset was built with teacher_temperature={temperatures}, but "
            f"training uses uld_teacher_temperature={teacher_temperature}. Rebuild the cache with "
            f"teacher_temperature={teacher_temperature} or set uld_teacher_temperature to the cached value."
        )
    for cached_k, vocab_size in zip(
        _settings(dataset, "teacher_cache_top_k"), _settings(dataset, "teacher_cache_vocab_size")
    ):
        if cached_k < vocab_size and (top_k is None or top_k > cached_k):
            wanted = "the whole vocabulary (uld_top_k=None)" if top_k is None else f"uld_top_k={top_k}"
            raise ValueError(
                f"The teacher cache of the {dataset_name} dataset keeps the top {cached_k} of {vocab_size} teacher "
                f"probabilities per token, but training asks for {wanted}. Rebuild the cache with a top_k at least "
                f"as large, or lower uld_top_k to {cached_k}."
            )


def collate_teacher_cache(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """
    Batches the teacher-cache columns of `examples`: `teacher_topk_probs` `(batch, max_tokens, k)` and
    `teacher_remaining_mass` `(batch, max_tokens)` zero-padded, and `teacher_num_tokens` `(batch,)`.
    """
    widths = {example["teacher_cache_top_k"] for example in examples}
    if len(widths) != 1:
        raise ValueError(
            f"The teacher-cache rows of a batch keep different numbers of probabilities: {sorted(widths)}."
        )
    width = widths.pop()
    counts = [len(example["teacher_topk_probs"]) for example in examples]
    max_tokens = max(counts, default=0)
    values = torch.zeros(len(examples), max_tokens, width, dtype=torch.float32)
    remaining = torch.zeros(len(examples), max_tokens, dtype=torch.float32)
    for index, example in enumerate(examples):
        if counts[index]:
            values[index, : counts[index]] = torch.tensor(example["teacher_topk_probs"], dtype=torch.float32)
            remaining[index, : counts[index]] = torch.tensor(example["teacher_remaining_mass"], dtype=torch.float32)
    return {
        "teacher_topk_probs": values,
        "teacher_remaining_mass": remaining,
        "teacher_num_tokens": torch.tensor(counts, dtype=torch.long),
    }


def teacher_probs_from_batch(batch: dict[str, torch.Tensor]) -> SortedTeacherProbs:
    """The [`SortedTeacherProbs`] of a batch collated by [`collate_teacher_cache`] / [`TeacherCacheCollator`]."""
    return SortedTeacherProbs(
        batch["teacher_topk_probs"], batch["teacher_remaining_mass"], batch["teacher_num_tokens"]
    )


class TeacherCacheCollator:
    """
    Wraps a ULD data collator (e.g. `ULDDataCollator`) and adds the batched teacher cache
    (`teacher_topk_probs`, `teacher_remaining_mass`, `teacher_num_tokens`) to each batch.

    Args:
        collator (`Callable[[list[dict]], dict[str, torch.Tensor]]`):
            The collator of the other columns.
    """

    def __init__(self, collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]):
        self.collator = collator

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.collator(examples)
        batch.update(collate_teacher_cache(examples))
        return batch
