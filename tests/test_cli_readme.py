"""Every `eurobert-hf` command line in the README runs as written, with tiny local models standing in for the Hub ids
and small data files under the names the README uses (offline, in-process)."""

# ruff: noqa: F811 - the fixtures `eurobert_dir` and `causal_pair` are imported from tests.test_cli
import csv
import os
import re
import shlex

import pytest

from eurobert_hf.cli import main
from tests.test_cli import (  # noqa: F401 - fixtures
    CLASSIFICATION_ROWS,
    QA_PAIRS,
    REPO_ROOT,
    causal_pair,
    eurobert_dir,
    write_jsonl,
)


def readme_command_lines() -> list[str]:
    """The `eurobert-hf` lines of the README's bash blocks, without their comments."""
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as file:
        blocks = re.findall(r"```bash\n(.*?)```", file.read(), flags=re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("eurobert-hf")]


README_LINES = readme_command_lines()


def test_the_readme_shows_every_command():
    assert {shlex.split(line)[1] for line in README_LINES} >= {"--help", "demo", "distill", "finetune", "pretrain"}


def write_readme_data(folder) -> None:
    write_jsonl(folder / "data.jsonl", QA_PAIRS)
    with open(folder / "data.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(CLASSIFICATION_ROWS)
    write_jsonl(folder / "corpus.jsonl", [{"text": row["text"] * 3} for row in CLASSIFICATION_ROWS])


@pytest.mark.parametrize("line", README_LINES, ids=[" ".join(shlex.split(line)[:2]) for line in README_LINES])
def test_readme_command_line_runs_as_written(line, eurobert_dir, causal_pair, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_readme_data(tmp_path)
    # `[--quick]` in the README marks an optional flag: both forms run.
    variants = (
        [line.replace(" [--quick]", ""), line.replace("[--quick]", "--quick")] if "[--quick]" in line else [line]
    )
    stand_ins = {"EuroBERT/EuroBERT-210m": eurobert_dir, "S": causal_pair[0], "T": causal_pair[1]}
    if shlex.split(line)[1] == "demo":
        # The demo's own pipeline (minutes, real models from PyPI) is tested in tests/test_demo.py; here the command
        # line itself: flags, default output folder, summary.
        from eurobert_hf.demo import pipeline

        def quick_pipeline(output_dir, **kwargs):
            os.makedirs(output_dir)
            scores = {"before": {"overall": {"rougeL": 0.1}}, "uld": {"overall": {"rougeL": 0.2}}}
            return pipeline.DemoResult(tmp_path, scores, {}, {}, {})

        monkeypatch.setattr(pipeline, "run_demo", quick_pipeline)
    for variant in variants:
        arguments = [stand_ins.get(word, word) for word in shlex.split(variant)[1:]]
        code = main(arguments)
        captured = capsys.readouterr()
        assert code == 0, (variant, captured.err[-3000:])
        if arguments[0] in ("distill", "finetune", "pretrain"):
            assert os.path.isfile(tmp_path / "out" / "model.safetensors")
            assert "| model folder" in captured.out
        if arguments[0] == "demo":
            os.rename(tmp_path / "eurobert-hf-demo", tmp_path / f"demo-{len(variant)}")
