"""A teacher cache on disk: Parquet shards written by one process or many, resumable, loaded with `datasets`.

[`build_teacher_cache`] prepares a dataset for ULD (both tokenizations), cuts the prepared rows into shards of
`rows_per_shard` consecutive rows, and writes `shard-XXXXX-of-YYYYY.parquet` files (the prepared columns plus the cache
columns of [`cache_teacher_probs`]) into a folder. Under `accelerate launch --num_processes N` (or with explicit
`process_index` / `num_processes`) process `p` builds the shards `p, p + N, p + 2N, ...`: a shard's rows and teacher
batches do not depend on `N`, so the union of the shards equals a one-process build. Each shard is written to a
temporary file and renamed when complete, so a shard file is never half-written; an interrupted build run again skips
the shards that exist. `teacher_cache.json` records the settings and the number of shards; a build into a folder made
with other settings is refused. [`load_teacher_cache`] checks that every shard is there and loads them with `datasets`
(map-style, or streamed with `streaming=True`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset, IterableDataset, load_dataset
from transformers import PreTrainedTokenizerBase

from .cache_integrity import tokenizer_fingerprint
from .teacher_cache import cache_teacher_probs
from .uld_data import prepare_uld_dataset

__all__ = ["MANIFEST_FILE", "build_teacher_cache", "load_teacher_cache", "process_state", "shard_files"]

MANIFEST_FILE = "teacher_cache.json"
_MANIFEST_VERSION = 1


def process_state() -> PartialState:
    """accelerate's view of this process (rank, number of processes, device). On a machine without accelerators,
    processes started by `accelerate launch` / `torchrun` form a CPU group (gloo), one process per launch slot."""
    accelerator = getattr(torch, "accelerator", None)
    has_accelerator = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
    return PartialState(cpu=not has_accelerator)


def shard_files(output_dir: str | os.PathLike, num_shards: int) -> list[Path]:
    """The shard paths of a cache folder of `num_shards` shards, in row order."""
    return [Path(output_dir) / f"shard-{index:05d}-of-{num_shards:05d}.parquet" for index in range(num_shards)]


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    staging.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(staging, path)


def build_teacher_cache(
    teacher_model: torch.nn.Module,
    dataset: Dataset,
    output_dir: str | os.PathLike,
    *,
    processing_class: PreTrainedTokenizerBase,
    teacher_processing_class: PreTrainedTokenizerBase,
    max_length: int | None = None,
    format: str = "exact",
    top_k: int | None = None,
    teacher_temperature: float = 1.0,
    head_size: int = 32,
    tail_knots: int = 16,
    rows_per_shard: int = 1000,
    batch_size: int = 8,
    alignment: str = "positional",
    pair_trailing_textless: bool = True,
    teacher_name_or_path: str | None = None,
    teacher_revision: str | None = None,
    process_index: int | None = None,
    num_processes: int | None = None,
) -> Path:
    """
    Builds (or finishes) a teacher cache in `output_dir` as Parquet shards; see the module docstring.

    Args:
        teacher_model (`torch.nn.Module`):
            The teacher, on this process's device.
        dataset ([`~datasets.Dataset`]):
            Prompt–completion or `messages` data (tokenized here for both models, as the trainer would), or a
            `prepare_uld_dataset` output.
        output_dir (`str` or `os.PathLike`):
            The cache folder.
        processing_class, teacher_processing_class ([`~transformers.PreTrainedTokenizerBase`]):
            The student's and the teacher's tokenizers.
        max_length (`int`, *optional*):
            Maximum length of each side's sequence (as the trainer's `max_length`); training must use the same.
        format, top_k, teacher_temperature, head_size, tail_knots, batch_size:
            As in [`cache_teacher_probs`].
        rows_per_shard (`int`, *optional*, defaults to `1000`):
            Prepared rows per shard (the unit of work of a process and of resuming).
        alignment (`str`, *optional*, defaults to `"positional"`), pair_trailing_textless (`bool`, *optional*):
            As in `prepare_uld_dataset` (`"offsets"` adds the alignment-group columns).
        teacher_name_or_path (`str`, *optional*), teacher_revision (`str`, *optional*):
            Recorded in the cache (the name defaults to `teacher_model.name_or_path`).
        process_index (`int`, *optional*), num_processes (`int`, *optional*):
            This process's rank and the number of processes; default to accelerate's (see [`process_state`]).

    Returns:
        `Path`: `output_dir`. Every process returns once all shards are written (a barrier when launched by
        accelerate); with explicit `process_index`/`num_processes`, once its own shards are.
    """
    if isinstance(rows_per_shard, bool) or not isinstance(rows_per_shard, int) or rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be an integer >= 1, got {rows_per_shard!r}.")
    state = process_state() if process_index is None or num_processes is None else None
    if state is not None:
        process_index, num_processes = state.process_index, state.num_processes
    if not 0 <= process_index < num_processes:
        raise ValueError(f"process_index must lie in [0, num_processes={num_processes}), got {process_index}.")
    output_dir = Path(output_dir)

    def prepare() -> Dataset:
        return prepare_uld_dataset(
            dataset,
            processing_class,
            teacher_processing_class,
            max_length=max_length,
            alignment=alignment,
            pair_trailing_textless=pair_trailing_textless,
        )

    if state is not None:
        # The first process fills the `datasets` cache of the tokenization; the others read it.
        with state.main_process_first():
            prepared = prepare()
    else:
        prepared = prepare()
    num_shards = max(1, -(-len(prepared) // rows_per_shard))
    manifest = {
        "version": _MANIFEST_VERSION,
        "num_rows": len(prepared),
        "num_shards": num_shards,
        "rows_per_shard": rows_per_shard,
        "format": format,
        "top_k": top_k,
        "teacher_temperature": float(teacher_temperature),
        "head_size": head_size if format == "compact" else None,
        "tail_knots": tail_knots if format == "compact" else None,
        "max_length": max_length,
        "alignment": alignment,
        "student_tokenizer": tokenizer_fingerprint(processing_class),
        "teacher_tokenizer": tokenizer_fingerprint(teacher_processing_class),
        "teacher": teacher_name_or_path or getattr(teacher_model, "name_or_path", None) or None,
        "teacher_revision": teacher_revision,
    }
    manifest_path = output_dir / MANIFEST_FILE
    if process_index == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        if manifest_path.exists():
            existing = json.loads(manifest_path.read_text())
            if existing != manifest:
                different = sorted(
                    key for key in manifest.keys() | existing.keys() if manifest.get(key) != existing.get(key)
                )
                raise ValueError(
                    f"{output_dir} holds a teacher cache built with other settings ({', '.join(different)} differ: "
                    f"{ {key: existing.get(key) for key in different} } there, "
                    f"{ {key: manifest.get(key) for key in different} } now). Resume with the same settings, or "
                    "build into another folder."
                )
        else:
            _write_manifest(manifest_path, manifest)
    if state is not None:
        state.wait_for_everyone()
    elif not manifest_path.exists():
        raise ValueError(f"{manifest_path} is missing: process 0 creates it; run it first (or all together).")
    if json.loads(manifest_path.read_text()) != manifest:
        raise ValueError(f"{output_dir} holds a teacher cache built with other settings; see process 0's error.")

    for index, path in enumerate(shard_files(output_dir, num_shards)):
        if index % num_processes != process_index or path.exists():
            continue
        rows = range(index * rows_per_shard, min((index + 1) * rows_per_shard, len(prepared)))
        cached = cache_teacher_probs(
            teacher_model,
            prepared.select(rows),
            top_k=top_k,
            teacher_temperature=teacher_temperature,
            batch_size=batch_size,
            pad_token_id=teacher_processing_class.pad_token_id,
            format=format,
            head_size=head_size,
            tail_knots=tail_knots,
            processing_class=processing_class,
            teacher_processing_class=teacher_processing_class,
            max_length=max_length,
            teacher_name_or_path=manifest["teacher"],
            teacher_revision=teacher_revision,
        )
        # Written under a temporary name and renamed when complete: a shard file is never half-written.
        staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        cached.to_parquet(str(staging))
        os.replace(staging, path)
    if state is not None:
        state.wait_for_everyone()
    return output_dir


def load_teacher_cache(output_dir: str | os.PathLike, *, streaming: bool = False) -> Dataset | IterableDataset:
    """
    Loads a cache folder written by [`build_teacher_cache`]: a [`~datasets.Dataset`] (or an
    [`~datasets.IterableDataset`] with `streaming=True`) that trains with `ULDTrainer(teacher_model=None)`. Raises a
    `ValueError` naming the missing shards of an unfinished build.
    """
    manifest_path = Path(output_dir) / MANIFEST_FILE
    if not manifest_path.exists():
        raise ValueError(f"{output_dir} is not a teacher cache folder (no {MANIFEST_FILE}); build it first.")
    manifest = json.loads(manifest_path.read_text())
    files = shard_files(output_dir, manifest["num_shards"])
    missing = [index for index, path in enumerate(files) if not path.exists()]
    if missing:
        raise ValueError(
            f"The teacher cache in {output_dir} is incomplete: shards {missing} of {len(files)} are missing (the "
            "build was interrupted). Run the same build again: it writes only the missing shards."
        )
    return load_dataset("parquet", data_files=[str(path) for path in files], split="train", streaming=streaming)
