"""Fuzzing the `eurobert-hf` data paths: hundreds of malformed rows and files, drawn with a fixed seed.

Each case is a data file of valid rows with one bad row (a null, a wrong type, a ragged list, an empty string, next to
huge lines) or a broken file (bytes that are not UTF-8, lines that are not JSON objects, an empty file, ragged or
unterminated CSV lines). Every one must
end in exit status 1 with one error line, and a bad row must be named by file, row and column, so that no valid row
next to it is lost silently. The command runs in-process through `main()` and stops before any model is loaded: the
data are validated first, so the loop pays no model start-up. Files of valid rows only are accepted up to that point.
"""

# ruff: noqa: F811 - the fixtures `eurobert_dir` and `causal_pair` are imported from tests.test_cli
import json
import random
import string

import datasets
import pytest

from eurobert_hf.cli import main
from eurobert_hf.commands import distill, finetune, pretrain
from tests.test_cli import FAST, causal_pair, eurobert_dir  # noqa: F401 - fixtures

SEED = 20261201
ROW_CASES = 40  # per command and task
FILE_CASES = 8
VALID_CASES = 2
HUGE = 200_000  # characters of a huge (valid) text next to the bad row
WORDS = ["Paris", "Berlin", "le", "chat", "der", "Hund", "é", "ß", "naïve", "🙂", "日本", "a"]


class DataAccepted(Exception):
    """Raised where the command would load a model: the data passed every check."""


def accepted(*args, **kwargs):
    raise DataAccepted


class _Refusing:
    from_pretrained = staticmethod(accepted)


def words(rng: random.Random, low: int = 1, high: int = 6) -> list[str]:
    return [rng.choice(WORDS) for _ in range(rng.randint(low, high))]


def sentence(rng: random.Random) -> str:
    return " ".join(words(rng))


# Each spec: a valid row generator and the bad values per column: (column, factory of a bad value given the row).
def text_classification_row(rng, index):
    return {"text": sentence(rng), "label": ["positive", "negative"][index % 2]}


def token_classification_row(rng, index):
    tokens = words(rng, 2)
    tags = ["O"] * len(tokens)
    tags[index % len(tokens)] = "B-LOC"
    return {"tokens": tokens, "ner_tags": tags}


def question_answering_row(rng, index):
    context_words = words(rng, 3, 8)
    answer = rng.randrange(len(context_words))
    context = " ".join(context_words)
    start = len(" ".join(context_words[:answer])) + (1 if answer else 0)
    return {
        "question": sentence(rng) + "?",
        "context": context,
        "answers": {"text": [context_words[answer]], "answer_start": [start]},
    }


def multiple_choice_row(rng, index):
    return {"question": sentence(rng), "choices": [sentence(rng) for _ in range(3)], "label": rng.randrange(3)}


def pretrain_row(rng, index):
    return {"text": sentence(rng)}


def distill_row(rng, index):
    return {"prompt": sentence(rng), "completion": " " + sentence(rng)}


NOT_TEXT = [None, 3, 2.5, True, ["a"], {"a": 1}]
NOT_LABEL = [None, "", "   ", 1.5, ["positive"], {"name": "positive"}, 7]  # 7: an id among class names
BAD = {
    "text-classification": [("text", lambda row, v=v: v) for v in NOT_TEXT]
    + [("label", lambda row, v=v: v) for v in NOT_LABEL],
    "token-classification": [
        *[("tokens", lambda row, v=v: v) for v in [None, "Paris is big", [], ["Paris", None], [3], 3]],
        *[("ner_tags", lambda row, v=v: v) for v in [None, "O", [None], [["O"]]]],
        ("ner_tags", lambda row: row["ner_tags"][:-1]),
        ("ner_tags", lambda row: row["ner_tags"] + ["O"]),
    ],
    "question-answering": [
        *[("question", lambda row, v=v: v) for v in [None, "", 3, ["q"]]],
        *[("context", lambda row, v=v: v) for v in [None, "", 3]],
        *[("answers", lambda row, v=v: v) for v in [None, "Paris", 3, {"text": ["x"]}, {"answer_start": [0]}]],
        ("answers", lambda row: {"text": row["answers"]["text"], "answer_start": [len(row["context"]) + 5]}),
        ("answers", lambda row: {"text": row["answers"]["text"], "answer_start": [-1]}),
        ("answers", lambda row: {"text": row["answers"]["text"], "answer_start": ["0"]}),
        ("answers", lambda row: {"text": ["zzz-not-there"], "answer_start": [0]}),
        ("answers", lambda row: {"text": row["answers"]["text"] * 2, "answer_start": row["answers"]["answer_start"]}),
        ("answers", lambda row: {"text": [""], "answer_start": [0]}),
    ],
    "multiple-choice": [
        *[("question", lambda row, v=v: v) for v in [None, 3, ["q"]]],
        *[("choices", lambda row, v=v: v) for v in [None, "a, b, c", ["only one"], ["a", None, "c"], ["a", 2, "c"]]],
        ("choices", lambda row: row["choices"] + ["one more"]),
        *[("label", lambda row, v=v: v) for v in [None, -1, 3, 1.5, "first", True]],
    ],
    "pretrain": [("text", lambda row, v=v: v) for v in [None, 3, 2.5, True, ["a"], {"a": 1}]],
    "distill": [
        *[("prompt", lambda row, v=v: v) for v in [None, 3, {"role": "user"}, [{"role": "user"}], [3]]],
        *[("completion", lambda row, v=v: v) for v in [None, 3, "", "   ", [1], {"a": 1}]],
        ("completion", lambda row: [{"role": "assistant", "content": row["completion"]}]),  # text prompt, chat answer
    ],
}
# A ragged number of choices is only wrong relative to the rows before it.
NEEDS_A_ROW_BEFORE = {("multiple-choice", 5)}
VALID_ROW = {
    "text-classification": text_classification_row,
    "token-classification": token_classification_row,
    "question-answering": question_answering_row,
    "multiple-choice": multiple_choice_row,
    "pretrain": pretrain_row,
    "distill": distill_row,
}
HUGE_COLUMN = {
    "text-classification": "text",
    "question-answering": "context",
    "multiple-choice": "question",
    "pretrain": "text",
    "distill": "prompt",
}


def write_lines(path, rows) -> None:
    with open(path, "w", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps(row, ensure_ascii=False) + "\n")


def row_cases(kind: str, rng: random.Random, folder) -> list[tuple[str, str]]:
    """Files with one bad row; returns (path, the location the error must name)."""
    cases = []
    for number in range(ROW_CASES):
        mutation = rng.randrange(len(BAD[kind]))
        column, bad_value = BAD[kind][mutation]
        rows = [VALID_ROW[kind](rng, index) for index in range(rng.randint(2, 6))]
        low = 1 if (kind, mutation) in NEEDS_A_ROW_BEFORE or column == "label" and mutation == len(NOT_TEXT) + 6 else 0
        position = rng.randint(low, len(rows))
        bad_row = VALID_ROW[kind](rng, position)
        bad_row[column] = bad_value(bad_row)
        rows.insert(position, bad_row)
        if kind in HUGE_COLUMN and rng.random() < 0.2:
            huge = next(i for i in range(len(rows)) if i != position)
            if kind == "question-answering":
                rows[huge]["question"] = "x" * HUGE
            else:
                rows[huge][HUGE_COLUMN[kind]] = "".join(rng.choices(string.ascii_letters + " ", k=HUGE))
        path = folder / f"{kind}-row-{number}.jsonl"
        write_lines(path, rows)
        cases.append((str(path), f"{path}, row {position + 1}, column {column!r}"))
    return cases


def file_cases(kind: str, rng: random.Random, folder) -> list[tuple[str, str]]:
    """Broken files; returns (path, what the error must name: the file, and the line when there is one)."""
    cases = []
    for number in range(FILE_CASES):
        rows = [VALID_ROW[kind](rng, index) for index in range(rng.randint(2, 5))]
        lines = [json.dumps(row, ensure_ascii=False).encode() for row in rows]
        line = rng.randrange(len(lines))
        damage = number % 4
        path = folder / f"{kind}-file-{number}.jsonl"
        if damage == 0:  # Latin-1 bytes inside a string
            lines[line] = lines[line].replace(b'"', b'"caf\xe9 ', 2)
            expected = f"{path}, line {line + 1}, column"
        elif damage == 1:  # a truncated line
            lines[line] = lines[line].decode()[: len(lines[line].decode()) // 2].encode()
            expected = f"{path}, line {line + 1}: not a JSON object"
        elif damage == 2:  # a line that is JSON but not an object
            lines[line] = rng.choice([b"[1, 2]", b"42", b'"text"', b"null"])
            expected = f"{path}, line {line + 1}: not a JSON object"
        else:  # an empty (or blank) file
            lines = [b""] if rng.random() < 0.5 else [b"   ", b""]
            expected = str(path)
        path.write_bytes(b"\n".join(lines) + b"\n")
        cases.append((str(path), expected))
    return cases


def csv_cases(kind: str, rng: random.Random, folder) -> list[tuple[str, str]]:
    """CSV files (flat columns only) with an empty cell, a ragged line, an open quote or a Latin-1 byte."""
    if kind not in ("text-classification", "pretrain"):
        return []
    cases = []
    for number in range(FILE_CASES):
        rows = [VALID_ROW[kind](rng, index) for index in range(rng.randint(2, 5))]
        columns = list(rows[0])
        lines = [",".join(columns)] + [",".join(row[column] for column in columns) for row in rows]
        line = rng.randrange(1, len(lines))
        # With one column an empty cell is a blank line, which CSV readers skip: an empty document, not a bad row.
        damage = number % 4 if len(columns) > 1 or number % 4 else 1
        path = folder / f"{kind}-csv-{number}.csv"
        if damage == 0:  # an empty cell: a missing value in that row
            column = rng.randrange(len(columns))
            cells = lines[line].split(",")
            cells[column] = ""
            lines[line] = ",".join(cells)
            expected = f"{path}, row {line}, column {columns[column]!r}"
        elif damage == 1:
            lines[line] += ",extra,cells"
            expected = str(path)  # the reader's line, or (extra cells on the first line: an index) a row
        elif damage == 2:
            lines[line] = '"' + lines[line]
            expected = str(path)
        else:
            expected = f"{path}, line {line + 1}, column"
        content = "\n".join(lines).encode() + b"\n"
        if damage == 3:
            encoded = [text.encode() for text in lines]
            encoded[line] = b"caf\xe9 " + encoded[line]
            content = b"\n".join(encoded) + b"\n"
        path.write_bytes(content)
        cases.append((str(path), expected))
    return cases


def valid_cases(kind: str, rng: random.Random, folder) -> list[str]:
    paths = []
    for number in range(VALID_CASES):
        path = folder / f"{kind}-valid-{number}.jsonl"
        write_lines(path, [VALID_ROW[kind](rng, index) for index in range(4)])
        paths.append(str(path))
    return paths


@pytest.fixture
def stop_before_models(monkeypatch, tmp_path):
    """Model loading raises `DataAccepted`; `datasets` caches the hundreds of files under `tmp_path`."""
    monkeypatch.setattr(finetune, "_AUTO_CLASSES", dict.fromkeys(finetune.TASKS, _Refusing))
    monkeypatch.setattr(pretrain, "AutoModelForMaskedLM", _Refusing)
    monkeypatch.setattr(distill, "load_teacher_model", accepted)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def command_line(kind: str, eurobert_dir: str, causal_pair: tuple[str, str], path: str, output_dir) -> list[str]:
    if kind == "distill":
        model = ["distill", "--model_name_or_path", causal_pair[0], "--teacher_model_name_or_path", causal_pair[1]]
    elif kind == "pretrain":
        model = ["pretrain", "--model_name_or_path", eurobert_dir]
    else:
        model = ["finetune", "--model_name_or_path", eurobert_dir, "--task", kind]
    return [*model, "--train_file", path, "--output_dir", str(output_dir), *FAST]


@pytest.mark.parametrize("kind", list(BAD))
def test_malformed_data_never_gives_a_traceback(kind, eurobert_dir, causal_pair, tmp_path, capsys, stop_before_models):
    rng = random.Random(f"{SEED}-{kind}")
    command = command_line(kind, eurobert_dir, causal_pair, "", tmp_path / "out")[0]
    cases = row_cases(kind, rng, tmp_path) + file_cases(kind, rng, tmp_path) + csv_cases(kind, rng, tmp_path)
    for path, expected in cases:
        arguments = command_line(kind, eurobert_dir, causal_pair, path, tmp_path / "out")
        try:
            code = main(arguments)
        except DataAccepted:
            pytest.fail(f"{path} was accepted: {open(path, encoding='utf-8', errors='replace').read()[:500]}")
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        errors = [line for line in err.splitlines() if line.startswith(f"eurobert-hf {command}: error:")]
        assert code == 1 and len(errors) == 1, (path, err[-2000:])
        assert expected in errors[0], (path, errors[0])
        assert len(errors[0]) < 1000, errors[0]  # a huge line never becomes a huge message
    for path in valid_cases(kind, rng, tmp_path):
        with pytest.raises(DataAccepted):
            main(command_line(kind, eurobert_dir, causal_pair, path, tmp_path / "out"))
        capsys.readouterr()
