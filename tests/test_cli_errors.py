"""Bad input to `eurobert-hf` gives exit status 1 and one clear error line naming file, row and column, before any
model is loaded where the problem is in the data; inputs that used to be accepted silently are refused."""

# ruff: noqa: F811 - the fixtures `eurobert_dir` and `causal_pair` are imported from tests.test_cli
import os

import pytest
import torch
from transformers import Trainer

from eurobert_hf import EuroBertConfig, EuroBertForMaskedLM, EuroBertForSequenceClassification
from eurobert_hf.cli import main
from tests.test_cli import (  # noqa: F401 - fixtures
    CHOICE_ROWS,
    CLASSIFICATION_ROWS,
    FAST,
    NER_ROWS,
    QA_PAIRS,
    SQUAD_ROWS,
    causal_pair,
    char_wordpiece_tokenizer,
    eurobert_dir,
    write_jsonl,
)

TASK_OF = {"text": "text-classification", "ner": "token-classification", "qa": "question-answering"}


def run(capsys, command, model, train_rows, tmp_path, *extra, eval_rows=None) -> tuple[int, str, str]:
    """Runs `eurobert-hf COMMAND` on `train_rows` (and `eval_rows`); returns the status, stdout and stderr."""
    train_file = write_jsonl(tmp_path / "train.jsonl", train_rows)
    data = ["--train_file", train_file]
    if eval_rows is not None:
        data += ["--eval_file", write_jsonl(tmp_path / "eval.jsonl", eval_rows)]
    code = main([command, "--model_name_or_path", *model, *data, "--output_dir", str(tmp_path / "out"), *FAST, *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str, command: str) -> str:
    """The one error line; no traceback and no second error line."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"eurobert-hf {command}: error:")]
    assert len(lines) == 1, err
    return lines[0]


def finetune_model(eurobert_dir, task="text-classification"):
    return [eurobert_dir, "--task", task]


@pytest.mark.parametrize(
    ("task", "train_rows", "eval_rows", "expected"),
    [
        (
            "text-classification",
            [{"text": "a", "label": "x"}, {"text": "b", "label": None}],
            None,
            "train.jsonl, row 2, column 'label': the label is missing (null).",
        ),
        (
            "text-classification",
            [{"text": "a", "label": 0}, {"text": "b", "label": 1}],
            [{"text": "a", "label": "zero"}],
            "eval.jsonl, row 1, column 'label': the evaluation data label 'label' with class names but the training data",
        ),
        (
            "text-classification",
            [{"text": "a", "label": "x"}, {"text": None, "label": "y"}],
            None,
            "train.jsonl, row 2, column 'text': the value is missing (null).",
        ),
        (
            "token-classification",
            [{"tokens": ["Marie", "lives", "here"], "ner_tags": ["B-PER", "O"]}],
            None,
            "train.jsonl, row 1, column 'ner_tags': 2 items for 3 items in 'tokens'",
        ),
        (
            "token-classification",
            [{"tokens": "Marie lives here", "ner_tags": ["B-PER", "O", "O"]}],
            None,
            "train.jsonl, row 1, column 'tokens': expected a list of words, got str",
        ),
        (
            "multiple-choice",
            [CHOICE_ROWS[0], {"question": "Two is", "choices": ["even", "odd"], "label": 0}],
            None,
            "train.jsonl, row 2, column 'choices': 2 choices, but row 1 has 3",
        ),
        (
            "multiple-choice",
            [{**CHOICE_ROWS[0], "label": 3}],
            None,
            "train.jsonl, row 1, column 'label': 3 is not the index of one of the 3 choices",
        ),
        (
            "question-answering",
            [SQUAD_ROWS[0], {**SQUAD_ROWS[1], "answers": {"text": ["Hans"], "answer_start": [99]}}],
            None,
            "train.jsonl, row 2, column 'answers': answer 'Hans' starts at character 99, outside the context",
        ),
        (
            "text-classification",
            [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}],
            None,
            "has a single class in 'label' (['x'])",
        ),
        (
            "text-classification",
            CLASSIFICATION_ROWS,
            [{"text": "a", "label": "neutral"}, {"text": "b", "label": "positive"}],
            "eval.jsonl, row 1, column 'label': the evaluation data has labels that the training data",
        ),
        (
            "token-classification",
            NER_ROWS,
            [{"tokens": ["Bonn"], "ner_tags": ["B-ORG"]}],
            "eval.jsonl, row 1, column 'ner_tags': the evaluation data has labels",
        ),
    ],
)
def test_finetune_data_errors_name_file_row_and_column(
    eurobert_dir, tmp_path, capsys, task, train_rows, eval_rows, expected
):
    code, _, err = run(
        capsys, "finetune", finetune_model(eurobert_dir, task), train_rows, tmp_path, eval_rows=eval_rows
    )
    assert code == 1
    assert expected in error_line(err, "finetune")
    assert "Loading weights" not in err  # refused before any model was loaded


def test_non_utf8_files_are_named_with_line_and_column(eurobert_dir, tmp_path, capsys):
    for name, content in [("train.csv", b"text,label\ncaf\xe9,a\n"), ("train.jsonl", b'{"text": "caf\xe9"}\n')]:
        path = tmp_path / name
        path.write_bytes(content)
        code = main(["finetune", "--model_name_or_path", eurobert_dir, "--task", "text-classification",
                     "--train_file", str(path), "--output_dir", str(tmp_path / "out"), *FAST])  # fmt: skip
        line = error_line(capsys.readouterr().err, "finetune")
        assert code == 1
        where = "line 2, column 4" if name.endswith("csv") else "line 1, column 14"
        assert f"{path}, {where}: byte 0xe9 is not UTF-8 text" in line, line


def test_squad_v2_unanswerable_rows_train_and_score_as_no_answer(eurobert_dir, tmp_path, capsys):
    unanswerable = {
        "id": "q3",
        "question": "Where does Hans work?",
        "context": "Hans besucht Berlin im Mai.",
        "answers": {"text": [], "answer_start": []},
    }
    code, out, err = run(capsys, "finetune", finetune_model(eurobert_dir, "question-answering"), [*SQUAD_ROWS, unanswerable], tmp_path,
        eval_rows=[*SQUAD_ROWS, unanswerable],
    )  # fmt: skip
    assert code == 0, err
    assert "eval_exact_match" in out


def test_finetune_checkpoint_with_another_number_of_labels(eurobert_dir, tmp_path, capsys):
    model = EuroBertForSequenceClassification.from_pretrained(eurobert_dir, num_labels=3)
    model.save_pretrained(tmp_path / "three-labels")
    char_wordpiece_tokenizer().save_pretrained(tmp_path / "three-labels")
    arguments = finetune_model(str(tmp_path / "three-labels"))
    code, _, err = run(capsys, "finetune", arguments, CLASSIFICATION_ROWS, tmp_path)
    assert code == 1
    assert "has a text-classification head for 3 labels, but the data has 2" in error_line(err, "finetune")
    code, _, err = run(capsys, "finetune", arguments, CLASSIFICATION_ROWS, tmp_path, "--ignore_mismatched_sizes")
    assert code == 0, err


def tiny_eurobert(folder, vocab_size) -> str:
    tokenizer = char_wordpiece_tokenizer()
    config = EuroBertConfig(
        vocab_size=vocab_size, hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, mask_token_id=tokenizer.mask_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    EuroBertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("command", ["finetune", "pretrain"])
def test_tokenizer_larger_than_the_vocabulary(command, tmp_path, capsys):
    size = len(char_wordpiece_tokenizer())
    model = [tiny_eurobert(tmp_path / "small-vocab", size - 10)]
    rows = CLASSIFICATION_ROWS if command == "finetune" else [{"text": "some text"}]
    code, _, err = run(capsys, command, model + (["--task", "text-classification"] if command == "finetune" else []),
                       rows, tmp_path)  # fmt: skip
    assert code == 1
    assert f"tokenizer has {size} tokens but" in error_line(err, command)
    assert f"has embeddings for {size - 10}" in err


def test_pretrain_null_text_and_empty_documents(eurobert_dir, tmp_path, capsys):
    code, _, err = run(capsys, "pretrain", [eurobert_dir], [{"text": "ok"}, {"text": None}], tmp_path)
    assert code == 1
    assert "train.jsonl, row 2, column 'text': the value is missing (null)." in error_line(err, "pretrain")
    rows = [{"text": "ok then"}, {"text": ""}, {"text": "  "}, {"text": "日本"}]  # CJK: unknown tokens only
    code, _, err = run(capsys, "pretrain", [eurobert_dir], rows, tmp_path)
    assert code == 0, err
    assert "2 empty training documents are left out" in err
    assert "1 training sequences hold special or unknown tokens only and are left out" in err
    code, _, err = run(capsys, "pretrain", [eurobert_dir], [{"text": "日本"}], tmp_path, "--overwrite_output_dir")
    assert code == 1
    assert "No training document has a token to mask" in error_line(err, "pretrain")


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([QA_PAIRS[0], {"prompt": "Hi", "completion": None}], "row 2, column 'completion': the value is missing"),
        ([{"prompt": "Hi", "completion": 42}], "row 1, column 'completion': expected text, got int 42"),
        ([{"prompt": "Hi", "completion": ""}], "row 1, column 'completion': the text is empty"),
        ([{"prompt": None, "completion": "x"}], "row 1, column 'prompt': the value is missing"),
        ([{"messages": [{"role": "user", "content": "Hi"}]}], "row 1, column 'messages': expected at least 2"),
        (
            [{"messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "?"}]}],
            "must end with an assistant turn",
        ),
    ],
)
def test_distill_data_errors(causal_pair, tmp_path, capsys, rows, expected):
    student, teacher = causal_pair
    code, _, err = run(capsys, "distill", [student, "--teacher_model_name_or_path", teacher], rows, tmp_path)
    assert code == 1
    assert expected in error_line(err, "distill")


def test_distill_refuses_an_encoder_student(eurobert_dir, causal_pair, tmp_path, capsys):
    code, _, err = run(
        capsys, "distill", [eurobert_dir, "--teacher_model_name_or_path", causal_pair[1]], QA_PAIRS, tmp_path
    )
    assert code == 1
    assert "The student is a 'eurobert' model without a causal-LM head" in error_line(err, "distill")


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--uld_distillation_weight", "nan"),
        ("--uld_crossentropy_weight", "inf"),
        ("--uld_student_temperature", "1e-45"),
    ],
)
def test_distill_refuses_non_finite_weights_and_underflowing_temperatures(causal_pair, tmp_path, capsys, flag, value):
    student, teacher = causal_pair
    code, _, err = run(
        capsys, "distill", [student, "--teacher_model_name_or_path", teacher], QA_PAIRS, tmp_path, flag, value
    )
    assert code == 1
    assert flag.removeprefix("--") in error_line(err, "distill")


def test_invalid_yaml_config_names_the_file_and_line(eurobert_dir, tmp_path, capsys):
    config = tmp_path / "recipe.yaml"
    config.write_text("learning_rate: 1e-4\nnum_train_epochs: [1, 2\n")
    code, _, err = run(
        capsys, "finetune", finetune_model(eurobert_dir), CLASSIFICATION_ROWS, tmp_path, "--config", str(config)
    )
    assert code == 1
    assert f"{config}, line 3, column 1: not valid YAML" in error_line(err, "finetune")


def test_unreachable_hub_at_the_final_push_keeps_the_folder_and_says_how_to_push(
    eurobert_dir, tmp_path, capsys, monkeypatch
):
    from eurobert_hf.commands import common

    class ConnectError(Exception):
        """As the Hub client's HTTP library raises it (not an `OSError`)."""

    def unreachable(*args, **kwargs):
        raise ConnectError("All connection attempts failed")

    monkeypatch.setattr(Trainer, "init_hf_repo", lambda self, *args, **kwargs: None)
    monkeypatch.setattr(common, "push_to_hub", unreachable)
    code, out, err = run(capsys, "finetune", finetune_model(eurobert_dir), CLASSIFICATION_ROWS, tmp_path, "--push_to_hub",
                         "--hub_model_id", "me/tiny")  # fmt: skip
    assert code == 1
    line = error_line(err, "finetune")
    output_dir = tmp_path / "out"
    assert "pushing it to the Hub failed (ConnectError: All connection attempts failed)" in line
    assert f"hf upload me/tiny {output_dir} --exclude 'checkpoint-*'" in line
    assert "| model folder" in out and "| pushed to" in out and "failed" in out
    assert {"config.json", "model.safetensors", "README.md"} <= set(os.listdir(output_dir))
    torch.testing.assert_close(  # the saved model is the trained one, complete
        EuroBertForSequenceClassification.from_pretrained(output_dir).classifier.weight.shape, torch.Size([2, 32])
    )


@pytest.mark.parametrize("kind", ["file", "save_to_disk folder", "save_to_disk dataset"])
def test_dataset_name_accepts_local_files_and_saved_datasets(kind, eurobert_dir, tmp_path, capsys):
    from datasets import Dataset, DatasetDict

    rows = Dataset.from_list(CLASSIFICATION_ROWS)
    if kind == "file":
        name = write_jsonl(tmp_path / "data.jsonl", CLASSIFICATION_ROWS)
    elif kind == "save_to_disk folder":
        DatasetDict({"train": rows, "validation": rows}).save_to_disk(tmp_path / "saved")
        name = str(tmp_path / "saved")
    else:
        rows.save_to_disk(tmp_path / "saved")
        name = str(tmp_path / "saved")
    code = main(["finetune", "--model_name_or_path", eurobert_dir, "--task", "text-classification",
                 "--dataset_name", name, "--output_dir", str(tmp_path / "out"), *FAST])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "| training samples" in captured.out
