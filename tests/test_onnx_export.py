"""`eurobert_hf.export_onnx` and `eurobert-hf export --format onnx`: every head runs in ONNX Runtime and matches
PyTorch (<= 1e-4 in float32) on padded batches whose shapes differ from the export example; float16 exports run."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import eurobert_hf.commands.export as export_command
import eurobert_hf.export as onnx_export
from eurobert_hf import export_onnx
from eurobert_hf.cli import main as cli_main
from eurobert_hf.export import ONNX_OUTPUT_NAMES

from .hub_fixtures import tiny_tokenizer
from .test_modeling_export import HEADS, build, make_batch

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TOLERANCE = 1e-4
# The exports take seconds each on 2 shared cores: these heads run in the quick suite, the others are `slow`.
QUICK_HEADS = ("masked-lm",)


def run_onnx(path: Path, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {name: tensor.numpy() for name, tensor in batch.items()})
    return {output.name: value for output, value in zip(session.get_outputs(), outputs)}


def padded_batches(num_choices: int | None) -> list[dict[str, torch.Tensor]]:
    """Shapes unlike the export example (2 x 8): longer, left- and right-padded, a single row."""
    choices = None if num_choices is None else 3
    return [
        make_batch([3, 13, 7], 13, left_padded=(2,), num_choices=choices, seed=5),
        make_batch([5], 6, left_padded=(0,), num_choices=choices, seed=6),
    ]


def assert_onnx_matches_torch(model, path: Path, fields, batches, tolerance: float) -> None:
    for batch in batches:
        with torch.no_grad():
            expected = model(**batch)
        actual = run_onnx(path, batch)
        assert set(actual) == set(fields)
        for field in fields:
            np.testing.assert_allclose(actual[field], expected[field].float().numpy(), atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize(
    "head", [head if head in QUICK_HEADS else pytest.param(head, marks=pytest.mark.slow) for head in HEADS]
)
def test_onnx_export_matches_pytorch_on_padded_batches(head, tmp_path):
    model, fields, num_choices = build(head)
    path = export_onnx(model, tmp_path / "model.onnx")
    assert path == tmp_path / "model.onnx"
    assert [f.name for f in tmp_path.iterdir()] == ["model.onnx"]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert all(isinstance(axis, str) for i in session.get_inputs() for axis in i.shape)  # every input axis dynamic
    assert_onnx_matches_torch(model, path, fields, padded_batches(num_choices), TOLERANCE)


def test_output_names_cover_every_head():
    assert {fields for _, _, fields in HEADS.values()} == set(ONNX_OUTPUT_NAMES.values())


def test_fp16_export_runs_close_to_float32(tmp_path):
    model, fields, _ = build("sequence-late")
    path = export_onnx(model, tmp_path / "model-fp16.onnx", fp16=True)
    assert next(model.parameters()).dtype == torch.float32  # the user's model is not converted
    batch = padded_batches(None)[0]
    actual = run_onnx(path, batch)
    assert actual["logits"].dtype == np.float16
    with torch.no_grad():
        expected = model(**batch).logits.numpy()
    np.testing.assert_allclose(actual["logits"].astype(np.float32), expected, atol=2e-2, rtol=2e-2)


class FakeProgram:
    """Stands for the exported `ONNXProgram` (no slow export): `save` writes the file, or half of it then fails."""

    def __init__(self, fail: bool = False):
        self.fail = fail

    def save(self, destination, **kwargs):
        Path(destination).write_bytes(b"half" if self.fail else b"graph")
        if self.fail:
            raise OSError("disk full")


def test_folder_export_saves_config_and_tokenizer_and_restores_the_mode(tmp_path, monkeypatch):
    model, _, _ = build("sequence-mean")
    model.train()
    modes = []
    monkeypatch.setattr(onnx_export, "_to_onnx", lambda m, task, opset: modes.append(m.training) or FakeProgram())
    path = export_onnx(model, tmp_path / "onnx", tokenizer=tiny_tokenizer())
    assert path == tmp_path / "onnx" / "model.onnx"
    assert modes == [False] and model.training  # traced in eval mode; the caller's mode is restored
    assert {"model.onnx", "config.json", "tokenizer_config.json"} <= {f.name for f in path.parent.iterdir()}
    assert json.loads((path.parent / "config.json").read_text())["model_type"] == "eurobert"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_onnx(model, tmp_path / "onnx")
    assert export_onnx(model, tmp_path / "onnx", overwrite=True) == path


def test_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    model, _, _ = build("masked-lm")
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"previous")
    monkeypatch.setattr(onnx_export, "_to_onnx", lambda *args: FakeProgram(fail=True))
    with pytest.raises(OSError, match="disk full"):
        export_onnx(model, existing, overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        export_onnx(model, tmp_path / "folder")
    assert existing.read_bytes() == b"previous"
    assert [f.name for f in tmp_path.iterdir()] == ["model.onnx"]


def test_export_refuses_what_onnx_cannot_hold(tmp_path):
    model, _, _ = build("masked-lm")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_onnx(model, tmp_path / "model.onnx")
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(ValueError, match="attn_implementation='sdpa'"):
        export_onnx(model, tmp_path / "other.onnx")
    with pytest.raises(ValueError, match="EuroBERT"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "other.onnx")


def test_cli_exports_a_saved_checkpoint(tmp_path, capsys):
    model, _, _ = build("sequence-bos")
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    tiny_tokenizer().save_pretrained(checkpoint)
    output_dir = tmp_path / "exported"
    status = cli_main(
        ["export", "--model_name_or_path", str(checkpoint), "--format", "onnx", "--output_dir", str(output_dir)]
    )
    assert status == 0, capsys.readouterr().err
    assert {"model.onnx", "config.json", "tokenizer_config.json"} <= {f.name for f in output_dir.iterdir()}
    assert str(output_dir / "model.onnx") in capsys.readouterr().out
    assert_onnx_matches_torch(model.eval(), output_dir / "model.onnx", ("logits",), padded_batches(None), TOLERANCE)

    status = cli_main(["export", "--model_name_or_path", str(checkpoint), "--output_dir", str(output_dir)])
    assert status == 1
    assert "--overwrite_output_dir" in capsys.readouterr().err


def test_cli_exports_the_requested_task_head(tmp_path, monkeypatch):
    build("masked-lm")[0].save_pretrained(tmp_path / "checkpoint")
    exported = {}

    def fake_export(model, path, **kwargs):
        exported.update(model=model, path=path, **kwargs)
        return Path(path) / "model.onnx"

    monkeypatch.setattr(export_command, "export_onnx", fake_export)
    argv = ["export", "--model_name_or_path", str(tmp_path / "checkpoint"), "--output_dir", str(tmp_path / "out")]
    assert cli_main([*argv, "--task", "question-answering", "--fp16"]) == 0
    assert type(exported["model"]).__name__ == "EuroBertForQuestionAnswering"
    assert exported["fp16"] and exported["tokenizer"] is None
    assert next(exported["model"].parameters()).dtype == torch.float32
    assert cli_main(argv) == 0  # without --task: the checkpoint's own head
    assert type(exported["model"]).__name__ == "EuroBertForMaskedLM"


def test_cli_rejects_a_config_without_a_head(tmp_path, capsys):
    config = build("base")[0].config
    config.architectures = None
    config.save_pretrained(tmp_path / "checkpoint")
    argv = ["export", "--model_name_or_path", str(tmp_path / "checkpoint"), "--output_dir", str(tmp_path / "out")]
    assert cli_main(argv) == 1
    assert "--task" in capsys.readouterr().err


def test_cli_help_lists_the_export_command_and_its_flags(capsys):
    assert cli_main(["--help"]) == 0
    assert "export" in capsys.readouterr().out
    assert cli_main(["export", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--model_name_or_path", "--format", "--output_dir", "--task", "--fp16", "--overwrite_output_dir"):
        assert flag in out, flag
