"""What a teacher cache was built from, and the checks that refuse a cache that does not belong to the training run.

A cache records, on every row (so that the record survives any `datasets` transform, shuffle, shard or stream):

- `teacher_cache_settings`: a JSON object with the storage format and its parameters, the teacher's vocabulary size,
  temperature and top-k, the teacher's name and revision, the fingerprints of the student's and the teacher's
  tokenizers ([`tokenizer_fingerprint`]) and the `max_length` the rows were tokenized with (each when known);
- `teacher_cache_num_tokens`: the number of teacher answer tokens whose probabilities the row holds;
- `teacher_cache_teacher_ids_hash` / `teacher_cache_student_ids_hash`: hashes of the row's teacher token ids and labels
  and of its student token ids and labels, so that cached values attached to other rows (reordered, filtered, or
  tokenized again) are detected.

[`TeacherCacheRequirements`] says what training needs; [`settings_mismatch`] and [`row_mismatch`] name what differs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase, ProcessorMixin

__all__ = [
    "ROW_COLUMNS",
    "SETTINGS_COLUMN",
    "TeacherCacheRequirements",
    "row_mismatch",
    "row_record",
    "settings_mismatch",
    "tokenizer_fingerprint",
]

SETTINGS_COLUMN = "teacher_cache_settings"
ROW_COLUMNS = ("teacher_cache_num_tokens", "teacher_cache_teacher_ids_hash", "teacher_cache_student_ids_hash")
# Cached probabilities of a token must sum to 1 up to this (float16 rounding of the compact head stays far below it).
MASS_TOLERANCE = 2e-3
# Text tokenized into the fingerprint: it catches normalizer, pre-tokenizer and special-token insertion differences
# that the vocabulary alone does not show.
_PROBE_TEXT = "Hello World!  Grüße, 東京 — 3.14159\n\ttabs and\r\nnewlines, émojis 🙂 <b>tags</b> ..."
_UNCHECKED = "unchecked"
_OTHER_ROWS = (
    "the cached columns were attached to other rows (reordered or filtered), or the rows were tokenized again after "
    "caching. Build the cache on this dataset"
)


def _tokenizer_of(processing_class: PreTrainedTokenizerBase | ProcessorMixin) -> PreTrainedTokenizerBase:
    return processing_class.tokenizer if isinstance(processing_class, ProcessorMixin) else processing_class


def tokenizer_fingerprint(processing_class: PreTrainedTokenizerBase | ProcessorMixin) -> str:
    """
    A short hash of what decides a tokenizer's token ids: its vocabulary (added tokens included), its BOS/EOS/UNK ids,
    its chat template and the ids it gives a fixed probe text. The padding token is left out: padding changes no id
    of a row, and trainers set it when a tokenizer lacks one.
    """
    tokenizer = _tokenizer_of(processing_class)
    digest = hashlib.blake2b(digest_size=8)
    digest.update(json.dumps(tokenizer.get_vocab(), ensure_ascii=False, sort_keys=True).encode())
    described = [
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.unk_token_id,
        tokenizer.chat_template,
        tokenizer(_PROBE_TEXT)["input_ids"],
    ]
    digest.update(json.dumps(described, ensure_ascii=False, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _ids_hash(input_ids: list[int], labels: list[int]) -> int:
    digest = hashlib.blake2b(digest_size=8)
    digest.update(np.asarray(input_ids, dtype=np.int64).tobytes())
    digest.update(b"|")
    digest.update(np.asarray(labels, dtype=np.int64).tobytes())
    return int.from_bytes(digest.digest(), "little", signed=True)


def row_record(example: dict[str, Any], num_tokens: int) -> dict[str, int]:
    """The per-row integrity columns of a prepared ULD row whose cache holds `num_tokens` teacher answer tokens."""
    return {
        "teacher_cache_num_tokens": num_tokens,
        "teacher_cache_teacher_ids_hash": _ids_hash(example["teacher_input_ids"], example["teacher_labels"]),
        "teacher_cache_student_ids_hash": _ids_hash(example["input_ids"], example["labels"]),
    }


@dataclass(frozen=True)
class TeacherCacheRequirements:
    """
    What a training run needs of a teacher cache. A field left at `"unchecked"` is not compared.

    Args:
        teacher_temperature (`float`, *optional*, defaults to `1.0`):
            The trainer's `uld_teacher_temperature`.
        top_k (`int`, *optional*):
            The trainer's `uld_top_k` (None: the whole vocabulary). A cache keeping fewer probabilities than asked is
            refused; the compact format models the whole vocabulary and serves any `top_k`.
        max_length (`int` or `None`, *optional*, defaults to `"unchecked"`):
            The trainer's `max_length` (None: no truncation).
        student_tokenizer (`str`, *optional*, defaults to `"unchecked"`):
            [`tokenizer_fingerprint`] of the student's tokenizer.
        teacher_tokenizer (`str`, *optional*, defaults to `"unchecked"`):
            [`tokenizer_fingerprint`] of the teacher's tokenizer.
        teacher (`str`, *optional*, defaults to `"unchecked"`):
            The teacher's name or path.
    """

    teacher_temperature: float = 1.0
    top_k: int | None = None
    max_length: int | None | str = _UNCHECKED
    student_tokenizer: str = _UNCHECKED
    teacher_tokenizer: str = _UNCHECKED
    teacher: str = _UNCHECKED

    @classmethod
    def for_training(
        cls,
        args: Any,
        processing_class: PreTrainedTokenizerBase | ProcessorMixin,
        teacher_processing_class: PreTrainedTokenizerBase | ProcessorMixin | None = None,
    ) -> TeacherCacheRequirements:
        """The requirements of a `ULDConfig` (`uld_teacher_temperature`, `uld_top_k`, `max_length`) and the tokenizers
        of a training run (the teacher's is checked only when given)."""
        return cls(
            teacher_temperature=args.uld_teacher_temperature,
            top_k=args.uld_top_k,
            max_length=args.max_length,
            student_tokenizer=tokenizer_fingerprint(processing_class),
            teacher_tokenizer=(
                _UNCHECKED if teacher_processing_class is None else tokenizer_fingerprint(teacher_processing_class)
            ),
        )


@functools.lru_cache(maxsize=64)
def parse_settings(settings: str) -> dict[str, Any]:
    """The settings record of a cache row (parsed once per distinct string)."""
    return json.loads(settings)


def settings_mismatch(settings: dict[str, Any], requirements: TeacherCacheRequirements) -> str | None:
    """What in a cache's `settings` does not match `requirements` (with the fix), or None when nothing does."""
    if not math.isclose(settings["temperature"], requirements.teacher_temperature, rel_tol=1e-9):
        return (
            f"it was built with teacher_temperature={settings['temperature']}, but training uses "
            f"uld_teacher_temperature={requirements.teacher_temperature}. Rebuild the cache with "
            f"teacher_temperature={requirements.teacher_temperature} or set uld_teacher_temperature to the cached value."
        )
    cached_k, vocab_size, top_k = settings["top_k"], settings["vocab_size"], requirements.top_k
    if settings["format"] == "exact" and cached_k < vocab_size and (top_k is None or top_k > cached_k):
        wanted = "the whole vocabulary (uld_top_k=None)" if top_k is None else f"uld_top_k={top_k}"
        return (
            f"it keeps the top {cached_k} of {vocab_size} teacher probabilities per token, but training asks for "
            f"{wanted}. Rebuild the cache with a top_k at least as large (or format='compact', which models the whole "
            f"vocabulary), or lower uld_top_k to {cached_k}."
        )
    if requirements.max_length != _UNCHECKED and "max_length" in settings:
        if settings["max_length"] != requirements.max_length:
            return (
                f"its rows were tokenized with max_length={settings['max_length']}, but training uses "
                f"max_length={requirements.max_length}. Rebuild the cache with max_length={requirements.max_length} "
                f"or train with max_length={settings['max_length']}."
            )
    for side in ("student", "teacher"):
        wanted, cached = getattr(requirements, f"{side}_tokenizer"), settings.get(f"{side}_tokenizer")
        if wanted != _UNCHECKED and cached is not None and wanted != cached:
            return (
                f"its rows were tokenized by another {side} tokenizer (fingerprint {cached}, this run's is {wanted}). "
                f"Rebuild the cache with this run's {side} tokenizer, or train with the one the cache was built with."
            )
    if requirements.teacher != _UNCHECKED and settings.get("teacher") not in (None, requirements.teacher):
        return (
            f"it was built from the teacher {settings['teacher']!r}, but this run's teacher is "
            f"{requirements.teacher!r}. Rebuild the cache with this teacher."
        )
    return None


def row_mismatch(example: dict[str, Any], num_stored_tokens: int, masses: np.ndarray) -> str | None:
    """
    What in one cache row does not belong to the row's token ids, or None: the number of teacher answer tokens, the
    hashes of both sides' ids and labels, and each token's cached probability mass (`masses`, which must be 1).
    """
    teacher_answer_tokens = sum(label != -100 for label in example["teacher_labels"][1:])
    if not example["teacher_cache_num_tokens"] == num_stored_tokens == teacher_answer_tokens:
        return (
            f"it holds probabilities for {num_stored_tokens} teacher answer tokens (recorded: "
            f"{example['teacher_cache_num_tokens']}) but the row has {teacher_answer_tokens}: {_OTHER_ROWS}"
        )
    record = row_record(example, num_stored_tokens)
    for side in ("teacher", "student"):
        column = f"teacher_cache_{side}_ids_hash"
        if record[column] != example[column]:
            return f"its {side} token ids and labels are not those the cache was built from: {_OTHER_ROWS}"
    if masses.size and not np.all(np.abs(masses - 1.0) <= MASS_TOLERANCE):
        worst = float(masses[np.argmax(np.abs(masses - 1.0))])
        return (
            f"its cached probabilities of a token sum to {worst:.6g} instead of 1: the values were modified (scaled or "
            "corrupted) after caching"
        )
    return None
