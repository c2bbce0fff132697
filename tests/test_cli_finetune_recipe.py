"""`eurobert-hf finetune` trains with the EuroBERT authors' fine-tuning recipe unless told otherwise, and its model
card records the values used."""

# ruff: noqa: F811 - the fixture `eurobert_dir` is imported from tests.test_cli
import os

import pytest
from huggingface_hub import ModelCard
from transformers import Trainer

from eurobert_hf import EuroBertConfig
from eurobert_hf.cli import main
from eurobert_hf.commands import finetune
from eurobert_hf.commands.finetune import recipe_learning_rate
from tests.test_cli import CLASSIFICATION_ROWS, FAST, eurobert_dir, write_jsonl  # noqa: F401 - fixture

# The published settings (https://github.com/Nicolas-BZRD/EuroBERT/issues/3), written out independently of the code.
PUBLISHED = {"betas": (0.9, 0.95), "eps": 1e-5, "weight_decay": 0.1, "warmup": 0.1}


@pytest.fixture
def trainers(monkeypatch) -> list[Trainer]:
    """The `Trainer` each run builds, kept for inspection."""
    built = []

    class Recording(Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(finetune, "Trainer", Recording)
    return built


def run_finetune(eurobert_dir, tmp_path, *extra) -> tuple[int, str]:
    train_file = write_jsonl(tmp_path / "train.jsonl", CLASSIFICATION_ROWS)
    output_dir = tmp_path / "out"
    fast = list(FAST)
    fast[fast.index("--max_steps") + 1] = "10"
    code = main(["finetune", "--model_name_or_path", eurobert_dir, "--task", "text-classification",
                 "--train_file", train_file, "--output_dir", str(output_dir), *fast, *extra])  # fmt: skip
    return code, output_dir


def test_defaults_are_the_authors_recipe_and_the_card_records_them(eurobert_dir, tmp_path, capsys, trainers):
    code, output_dir = run_finetune(eurobert_dir, tmp_path)
    err = capsys.readouterr().err
    assert code == 0, err
    assert "learning rate 3.6e-05, the EuroBERT authors' rate" in err
    [trainer] = trainers
    decayed, not_decayed = trainer.optimizer.param_groups
    assert decayed["betas"] == PUBLISHED["betas"] and decayed["eps"] == PUBLISHED["eps"]
    assert decayed["weight_decay"] == PUBLISHED["weight_decay"] and not_decayed["weight_decay"] == 0.0
    # Linear warmup over 10% of the 10 steps (1 step), then linear decay to 0 at step 10.
    schedule = trainer.lr_scheduler.lr_lambdas[0]
    assert [round(schedule(step), 6) for step in (0, 1, 5, 10)] == [0.0, 1.0, round(5 / 9, 6), 0.0]
    assert trainer.args.learning_rate == 3.6e-5
    hyperparameters = ModelCard.load(os.path.join(output_dir, "README.md")).content
    for line in ("learning_rate: 3.6e-05", "adam_beta1: 0.9", "adam_beta2: 0.95", "adam_epsilon: 1e-05",
                 "weight_decay: 0.1", "lr_scheduler_type: linear", "max_length: 512"):  # fmt: skip
        assert f"- {line}\n" in hyperparameters, line


def test_flags_and_config_files_override_the_recipe(eurobert_dir, tmp_path, capsys, trainers):
    config = tmp_path / "recipe.yaml"
    config.write_text("learning_rate: 1.0e-4\nweight_decay: 0.0\n")
    code, _ = run_finetune(eurobert_dir, tmp_path, "--config", str(config), "--adam_beta2", "0.999")
    assert code == 0, capsys.readouterr().err
    [trainer] = trainers
    assert trainer.args.learning_rate == 1e-4 and trainer.optimizer.param_groups[0]["weight_decay"] == 0.0
    assert trainer.optimizer.param_groups[0]["betas"] == (0.9, 0.999)


@pytest.mark.parametrize(("hidden_size", "expected"), [(768, 3.6e-5), (1152, 3.6e-5), (2304, 2.8e-5), (4096, 2.8e-5)])
def test_learning_rate_by_model_size(hidden_size, expected):
    # EuroBERT-210m, -610m and -2.1B have hidden sizes 768, 1152 and 2304.
    config = EuroBertConfig(hidden_size=hidden_size, num_attention_heads=hidden_size // 64, num_key_value_heads=1)
    assert recipe_learning_rate(config) == expected
