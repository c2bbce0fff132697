"""Teacher caches written as Parquet shards: many processes give the one-process cache, interrupted builds resume."""

import json
import os
import re
import socket
import subprocess
import sys

import pytest
import torch
from datasets import Dataset

from eurobert_hf.trainers.cache_shards import MANIFEST_FILE, build_teacher_cache, load_teacher_cache, shard_files
from eurobert_hf.trainers.teacher_cache import cache_teacher_probs
from eurobert_hf.trainers.uld_data import prepare_uld_dataset
from tests.uld_fixtures import prompt_completion_dataset, student_tokenizer, tiny_student

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS, ROWS_PER_SHARD = 6, 2


class CountingTeacher(torch.nn.Module):
    """A teacher that counts its forward passes."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.config, self.calls = model, model.config, 0

    def forward(self, **inputs):
        self.calls += 1
        return self.model(**inputs)


@pytest.fixture(scope="module")
def teacher():
    # Both sides read GPT-2's tokenizer (the cheapest real one to fingerprint); the teacher is a tiny model over it.
    return tiny_student(seed=1)


def _build(teacher, output_dir, **kwargs):
    settings = {
        "processing_class": student_tokenizer(),
        "teacher_processing_class": student_tokenizer(),
        "max_length": 32,
        "format": "compact",
        "head_size": 8,
        "tail_knots": 6,
        "rows_per_shard": ROWS_PER_SHARD,
        "batch_size": 2,
        "process_index": 0,
        "num_processes": 1,
    } | kwargs
    return build_teacher_cache(teacher, prompt_completion_dataset(ROWS), output_dir, **settings)


def _rows(dataset) -> list[dict]:
    return [dict(row) for row in dataset]


def test_two_processes_give_the_one_process_cache(teacher, tmp_path):
    single = load_teacher_cache(_build(teacher, tmp_path / "single"))
    for rank in (0, 1):
        _build(teacher, tmp_path / "two", process_index=rank, num_processes=2)
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "single"))
    two = load_teacher_cache(tmp_path / "two")
    assert len(single) == ROWS and _rows(two) == _rows(single)
    # ... which is the cache of the whole prepared dataset, built in memory with the same batches.
    prepared = prepare_uld_dataset(prompt_completion_dataset(ROWS), student_tokenizer(), student_tokenizer(), 32)
    in_memory = cache_teacher_probs(
        teacher, prepared, batch_size=2, format="compact", head_size=8, tail_knots=6,
        pad_token_id=student_tokenizer().pad_token_id,
        processing_class=student_tokenizer(), teacher_processing_class=student_tokenizer(), max_length=32,
    )  # fmt: skip
    assert _rows(single) == _rows(in_memory)
    # Streamed, the same rows.
    assert _rows(load_teacher_cache(tmp_path / "two", streaming=True)) == _rows(single)


def test_an_interrupted_build_resumes(teacher, tmp_path):
    complete = _rows(load_teacher_cache(_build(teacher, tmp_path)))
    files = shard_files(tmp_path, ROWS // ROWS_PER_SHARD)
    os.remove(files[1])
    # What a killed process leaves behind: a partial file under a temporary name, never under the shard's name.
    (tmp_path / f".{files[1].name}.tmp-12345").write_bytes(b"partial")
    with pytest.raises(ValueError, match=r"shards \[1\] of 3 are missing .* Run the same build again"):
        load_teacher_cache(tmp_path)
    counting = CountingTeacher(teacher)
    _build(counting, tmp_path)
    assert counting.calls == 1  # only the missing shard (2 rows, one batch) was computed
    assert _rows(load_teacher_cache(tmp_path)) == complete


def test_a_folder_built_with_other_settings_is_refused(teacher, tmp_path):
    _build(teacher, tmp_path)
    with pytest.raises(ValueError, match="other settings .*teacher_temperature"):
        _build(teacher, tmp_path, teacher_temperature=2.0)
    with pytest.raises(ValueError, match="not a teacher cache folder"):
        load_teacher_cache(tmp_path / "elsewhere")
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert manifest["num_shards"] == 3 and manifest["format"] == "compact" and manifest["max_length"] == 32


def test_the_command_writes_a_cache(teacher, tmp_path, capsys):
    from eurobert_hf.cli import main

    folder = _save_models(teacher, tmp_path)
    assert main(_command_args(folder, tmp_path / "cache")) == 0
    cached = load_teacher_cache(tmp_path / "cache")
    assert len(cached) == ROWS and "teacher answer tokens" in capsys.readouterr().out
    assert json.loads(cached[0]["teacher_cache_settings"])["teacher_revision"] is None
    assert main([*_command_args(folder, tmp_path / "bad"), "--format", "zip"]) == 1


def test_the_command_is_listed_with_its_flags(capsys):
    from eurobert_hf.cli import main

    assert main(["--help"]) == 0 and "cache-teacher" in capsys.readouterr().out
    assert main(["cache-teacher", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--teacher_model_name_or_path", "--format", "--head_size", "--rows_per_shard", "--max_length"):
        assert flag in out, flag
    assert main(["cache-teacher", "--output_dir", "x"]) == 1  # no models
    assert "--model_name_or_path" in capsys.readouterr().err


def _save_models(teacher, tmp_path) -> str:
    folder = str(tmp_path / "models" / "teacher")
    teacher.save_pretrained(folder)
    student_tokenizer().save_pretrained(folder)
    train_file = tmp_path / "train.jsonl"
    train_file.write_text(
        "".join(json.dumps(row) + "\n" for row in prompt_completion_dataset(ROWS).to_list()), encoding="utf-8"
    )
    return folder


def _command_args(folder: str, output_dir) -> list[str]:
    train_file = os.path.join(os.path.dirname(os.path.dirname(folder)), "train.jsonl")
    return [
        "cache-teacher", "--model_name_or_path", folder, "--teacher_model_name_or_path", folder,
        "--train_file", train_file, "--output_dir", str(output_dir), "--max_length", "32",
        "--head_size", "8", "--tail_knots", "6", "--rows_per_shard", str(ROWS_PER_SHARD), "--batch_size", "2",
    ]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_accelerate_launch_with_two_processes(teacher, tmp_path):
    # The README's launch line: `accelerate launch --num_processes N -m eurobert_hf cache-teacher ...`; `--multi_gpu`
    # starts the processes with the torchrun launcher, and without GPUs they run on CPU (gloo).
    folder = _save_models(teacher, tmp_path)
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(_free_port()), "-m", "eurobert_hf"]
    for command, name in (([sys.executable, "-m", "eurobert_hf"], "single"), (launch, "two")):
        result = subprocess.run(
            [*command, *_command_args(folder, tmp_path / name)],
            env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert re.search(r"\| processes +\| +2 \|", result.stdout), result.stdout
    single, two = load_teacher_cache(tmp_path / "single"), load_teacher_cache(tmp_path / "two")
    assert isinstance(single, Dataset) and len(single) == ROWS and _rows(two) == _rows(single)
