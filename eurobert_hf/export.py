"""ONNX export of EuroBERT models (`export_onnx`), for ONNX Runtime and the tools built on it.

The model is captured with `torch.export` (through `torch.onnx.export(..., dynamo=True)`, which needs `onnxscript`):
while it is being exported, EuroBERT takes its mask-based padded path, so the graph has dynamic batch and sequence axes
and serves any padding, left or right. The graph takes `input_ids` and `attention_mask` and returns the head's outputs
by name: `last_hidden_state` (`EuroBertModel`), `start_logits` and `end_logits` (question answering) or `logits`.
"""

import copy
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .hub import atomic_directory, eurobert_task

ONNX_FILE_NAME = "model.onnx"
# Names of the outputs each head's ONNX graph returns, by task (the Hub `pipeline_tag` of the head).
ONNX_OUTPUT_NAMES = {
    "feature-extraction": ("last_hidden_state",),
    "fill-mask": ("logits",),
    "text-classification": ("logits",),
    "token-classification": ("logits",),
    "question-answering": ("start_logits", "end_logits"),
    "multiple-choice": ("logits",),
}
ONNX_INPUT_NAMES = ("input_ids", "attention_mask")
_EXPORTABLE_ATTENTION = ("sdpa", "eager")


class _OnnxSignature(nn.Module):
    """`model` with positional `(input_ids, attention_mask)` inputs and a tuple of named outputs."""

    def __init__(self, model: nn.Module, output_names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.output_names = output_names

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return tuple(outputs[name] for name in self.output_names)


def _example_inputs(model: nn.Module, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A small batch with one padded row; its sizes (all >= 2) are traced as dynamic, never specialised."""
    shape = (2, 2, 8) if task == "multiple-choice" else (2, 8)
    device = next(model.parameters()).device
    input_ids = (torch.arange(math.prod(shape), device=device) % model.config.vocab_size).reshape(shape)
    attention_mask = torch.ones(shape, dtype=torch.long, device=device)
    attention_mask[0, ..., shape[-1] // 2 :] = 0
    return input_ids, attention_mask


def _dynamic_shapes(task: str) -> dict[str, dict[int, Any]]:
    batch = torch.export.Dim("batch_size")
    sequence = torch.export.Dim("sequence_length")
    if task == "multiple-choice":
        axes = {0: batch, 1: torch.export.Dim("num_choices"), 2: sequence}
    else:
        axes = {0: batch, 1: sequence}
    return {name: axes for name in ONNX_INPUT_NAMES}


def _check_exportable(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "eurobert":
        raise ValueError(
            f"export_onnx exports EuroBERT models; got a {type(model).__name__} "
            f"({getattr(config, 'model_type', None)!r}). Export other models with `optimum-cli export onnx`."
        )
    if hasattr(model, "peft_config"):
        raise ValueError(
            "This is a PEFT model: merge its adapters first (`model = model.merge_and_unload()`), then export it."
        )
    try:
        task = eurobert_task(type(model).__name__)
    except ValueError as error:
        raise ValueError(f"Cannot export {type(model).__name__}: {error}") from None
    implementation = getattr(config, "_attn_implementation", None) or "eager"
    if implementation not in _EXPORTABLE_ATTENTION:
        raise ValueError(
            f"The model uses attn_implementation={implementation!r}, which ONNX cannot express. Load it with "
            "`attn_implementation='sdpa'` (or 'eager') to export it."
        )
    return task


def _to_onnx(model: nn.Module, task: str, opset_version: int | None) -> Any:
    output_names = ONNX_OUTPUT_NAMES[task]
    signature = _OnnxSignature(model, output_names).eval()
    try:
        with warnings.catch_warnings():
            # torch warns that the two inputs share their axes: they do, on purpose (one batch, one sequence length).
            warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used")
            return torch.onnx.export(
                signature,
                _example_inputs(model, task),
                input_names=list(ONNX_INPUT_NAMES),
                output_names=list(output_names),
                dynamic_shapes=_dynamic_shapes(task),
                opset_version=opset_version,
                dynamo=True,
                verbose=False,
            )
    except ImportError as error:
        raise ImportError(
            f"ONNX export needs the `onnx` and `onnxscript` packages ({error}): `pip install 'eurobert-hf[onnx]'`."
        ) from error


def _check_target(target: Path, as_folder: bool, overwrite: bool) -> None:
    """Refuses an existing output before the (slow) export rather than after it."""
    if as_folder:
        if target.exists() and not target.is_dir():
            raise FileExistsError(f"{target} is a file; name the ONNX file with a .onnx suffix, or choose a folder.")
        if target.is_dir() and any(target.iterdir()) and not overwrite:
            raise FileExistsError(
                f"{target} is not empty; pass `overwrite=True` to replace it or choose another path."
            )
    elif target.is_dir():
        raise FileExistsError(f"{target} is a folder; pass a path without the .onnx suffix to write into a folder.")
    elif target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass `overwrite=True` to replace it or choose another path.")


def _write_file(program: Any, target: Path) -> None:
    """Saves the ONNX file (and its external-data file, for models over 2 GB) next to `target`, then moves it in:
    `target` is never a half-written file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.incomplete-", dir=target.parent))
    try:
        program.save(str(staging / target.name), external_data=None)
        # The graph file references its data file by name, so the data file goes first and the graph file last.
        for path in sorted(staging.iterdir(), key=lambda path: path.name == target.name):
            os.replace(path, target.parent / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    tokenizer: Any = None,
    fp16: bool = False,
    opset_version: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Exports a EuroBERT model (any head) to ONNX with dynamic batch and sequence axes.

    The graph's inputs are `input_ids` and `attention_mask` (int64, `(batch_size, sequence_length)`, or
    `(batch_size, num_choices, sequence_length)` for multiple choice); its outputs are named as the head's output
    fields (`last_hidden_state`, `logits`, or `start_logits` and `end_logits`). Padding positions of per-token outputs
    are zeros, as in PyTorch; question-answering logits at padding are the dtype's lowest value.

    Args:
        model (`EuroBertPreTrainedModel`):
            The model to export, on any device, in float32 (or float16). It is not modified.
        path (`str` or `os.PathLike`):
            A file ending in `.onnx`, or a folder: the folder then receives `model.onnx`, the model's `config.json`
            and the tokenizer's files, ready for ONNX Runtime pipelines. Written atomically: on failure the path is
            left absent or as it was.
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            Saved next to the graph when `path` is a folder.
        fp16 (`bool`, *optional*, defaults to `False`):
            Export in float16 (half the size; for GPUs). A float16 copy of the model is traced, so the export needs
            that much more memory. Normalisation and rotary embeddings still compute in float32 inside the graph.
        opset_version (`int`, *optional*):
            The ONNX opset; defaults to the exporter's default.
        overwrite (`bool`, *optional*, defaults to `False`):
            Whether an existing file or non-empty folder at `path` may be replaced.

    Returns:
        `Path`: the `.onnx` file written.

    Raises:
        `ValueError`: for a model that is not a EuroBERT head, a PEFT model, or an attention backend ONNX cannot
            express (flash or flex attention: load the model with `attn_implementation="sdpa"`).
        `FileExistsError`: if `path` exists and `overwrite` is `False`.
        `ImportError`: if `onnx`/`onnxscript` are missing (`pip install 'eurobert-hf[onnx]'`).
    """
    task = _check_exportable(model)
    target = Path(path)
    as_folder = target.suffix != ".onnx"
    _check_target(target, as_folder, overwrite)
    if fp16 and next(model.parameters()).dtype != torch.float16:
        model = copy.deepcopy(model).to(torch.float16)
    was_training = model.training
    model.eval()
    try:
        program = _to_onnx(model, task, opset_version)
    finally:
        model.train(was_training)
    if not as_folder:
        _write_file(program, target)
        return target
    with atomic_directory(target, overwrite=overwrite) as staging:
        _write_file(program, staging / ONNX_FILE_NAME)
        model.config.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
    return target / ONNX_FILE_NAME
