"""Checks of the user's data, run before any model is loaded: each problem is one `CommandError` line naming the
file (or dataset split), the row and the column, so that no bad row fails deep inside training and no row is dropped
without the user knowing.

Rows are counted from 1 in the order the data are read (a CSV file's header is not a row; a JSON Lines file's row N is
its N-th non-empty line).
"""

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset

from . import CommandError

# A checker returns `None` for a valid value and otherwise what is wrong with it.
Checker = Callable[[Any], str | None]
TEXT_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".txt")
_BATCH = 1000
_SHOWN_CHARACTERS = 60


def shown(value: Any) -> str:
    """`repr(value)` cut to a readable length (a huge line must not become a huge error message)."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARACTERS else text[: _SHOWN_CHARACTERS - 3] + "..."


def location(source: str, row: int | None = None, column: str | None = None) -> str:
    return source + (f", row {row + 1}" if row is not None else "") + (f", column {column!r}" if column else "")


def check_text_file(path: str | Path) -> None:
    """Refuses a text data file that is not UTF-8, and a JSON (Lines) file with a line that is not a JSON object,
    naming the line and column: the `datasets` readers report neither (or fail only later, on the first bad row)."""
    path = Path(path)
    if path.suffix.lower() not in TEXT_FILE_SUFFIXES:
        return
    json_lines = path.suffix.lower() == ".jsonl"
    whole_document = False
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise CommandError(
                    f"{path}, line {number}, column {error.start + 1}: byte 0x{raw[error.start]:02x} is not UTF-8 "
                    "text. Save the file as UTF-8."
                ) from None
            if path.suffix.lower() == ".json" and number == 1 and not _is_json_object(line):
                # A .json file is either JSON Lines or one JSON document (checked whole below).
                whole_document = True
            json_lines = json_lines or (path.suffix.lower() == ".json" and not whole_document)
            if json_lines and line.strip() and not _is_json_object(line):
                raise CommandError(
                    f"{path}, line {number}: not a JSON object ({shown(line.strip())}). Each line of a JSON Lines "
                    'file must be one object, such as {"text": "...", "label": "..."}.'
                )
    if whole_document:
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise CommandError(
                f"{path}, line {error.lineno}, column {error.colno}: invalid JSON ({error.msg})."
            ) from None


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def check_rows(dataset: Dataset, source: str, checkers: dict[str, Checker]) -> None:
    """Applies each column's checker to every row; the first problem becomes a `CommandError` naming source, row and
    column (also for text that cannot be decoded)."""
    columns = [column for column in checkers if column in dataset.column_names]
    if not columns:
        return
    selected = dataset.select_columns(columns)
    row = 0
    while row < len(selected):
        try:
            batch = selected[row : row + _BATCH]
        except UnicodeDecodeError:
            _report_undecodable(selected, source, row, columns)
        for offset in range(len(batch[columns[0]])):
            for column in columns:
                problem = checkers[column](batch[column][offset])
                if problem:
                    raise CommandError(f"{location(source, row + offset, column)}: {problem}")
        row += _BATCH


def _report_undecodable(dataset: Dataset, source: str, start: int, columns: list[str]) -> None:
    for row in range(start, min(start + _BATCH, len(dataset))):
        for column in columns:
            try:
                dataset[row][column]
            except UnicodeDecodeError:
                raise CommandError(f"{location(source, row, column)}: the text is not UTF-8.") from None
    raise CommandError(f"{source}: some text is not UTF-8.")


def text_value(value: Any) -> str | None:
    """A string (possibly empty)."""
    if value is None:
        return "the value is missing (null)."
    if not isinstance(value, str):
        return f"expected text, got {type(value).__name__} {shown(value)}."
    return None


def non_empty_text_value(value: Any) -> str | None:
    return text_value(value) or (None if value.strip() else "the text is empty.")


def label_value(value: Any) -> str | None:
    """A class name or an integer id (not a missing value, a decimal number or a list)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "the label is missing (null)."
    if isinstance(value, int) or (isinstance(value, str) and value.strip()):
        return None
    if isinstance(value, float) and value.is_integer():  # an integer id read into a column of decimals
        return None
    if isinstance(value, float):
        return f"{value!r} is a number with decimals; classification needs class names or integer ids."
    if isinstance(value, str):
        return "the label is empty."
    return f"expected a class name or an integer id, got {type(value).__name__} {shown(value)}."


def list_of(item: Checker, what: str, minimum: int = 1) -> Checker:
    """A list (not a string) of at least `minimum` items, each valid for `item`."""

    def check(value: Any) -> str | None:
        if value is None:
            return "the value is missing (null)."
        if isinstance(value, str) or not isinstance(value, list | tuple):
            return f"expected a list of {what}, got {type(value).__name__} {shown(value)}."
        if len(value) < minimum:
            return f"expected at least {minimum} {what}, got {len(value)}."
        for index, element in enumerate(value):
            problem = item(element)
            if problem:
                return f"item {index}: {problem}"
        return None

    return check


def label_key(value: Any) -> str:
    """The class a label value names: integer ids read as decimals (1.0) are the same class as 1."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def label_kind(dataset: Dataset | None, source: str, column: str, per_item: bool = False) -> str | None:
    """The kind of label a dataset holds ("integer id" or "class name"; `None` for `ClassLabel` columns and no data).
    Refuses a dataset that mixes both, which would map one class to two ids; `per_item` for one label per word."""
    if dataset is None or isinstance(_feature(dataset, column), ClassLabel):
        return None
    seen: tuple[str, int] | None = None
    for row, value in enumerate(dataset[column]):
        for item in value if per_item else [value]:
            kind = "class name" if isinstance(item, str | bool) else "integer id"
            if seen is None:
                seen = (kind, row)
            elif kind != seen[0]:
                raise CommandError(
                    f"{location(source, row, column)}: {shown(item)} is a {kind}, but row {seen[1] + 1} holds a "
                    f"{seen[0]}. Use one kind of label throughout (all class names or all integer ids)."
                )
    return None if seen is None else seen[0]


def same_label_kind(
    train: Dataset, eval_: Dataset | None, sources: tuple[str, str], column: str, per_item: bool = False
) -> None:
    """The evaluation labels are of the same kind as the training labels (class names vs integer ids)."""
    train_kind = label_kind(train, sources[0], column, per_item)
    eval_kind = label_kind(eval_, sources[1], column, per_item)
    if train_kind and eval_kind and train_kind != eval_kind:
        raise CommandError(
            f"{location(sources[1], 0, column)}: the evaluation data label {column!r} with {eval_kind}s but the "
            f"training data ({sources[0]}) with {train_kind}s. Use the same kind of label in both."
        )


def _feature(dataset: Dataset, column: str) -> Any:
    feature = dataset.features[column]
    return getattr(feature, "feature", feature[0] if isinstance(feature, list) else feature)


def same_length(dataset: Dataset, source: str, first: str, second: str) -> None:
    """Each row's `second` list has as many items as its `first` list (e.g. one tag per word)."""
    for row, (left, right) in enumerate(zip(dataset[first], dataset[second])):
        if len(left) != len(right):
            raise CommandError(
                f"{location(source, row, second)}: {len(right)} items for {len(left)} items in {first!r}; each of "
                f"{first!r} needs exactly one."
            )


def check_vocabulary(tokenizer: Any, config: Any, who: str, name: str) -> None:
    """Refuses a tokenizer with more tokens than the model has embeddings (its last ids would index past them)."""
    vocab_size = getattr(config, "vocab_size", None)
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise CommandError(
            f"The {who}'s tokenizer has {len(tokenizer)} tokens but {name!r} has embeddings for {vocab_size}: token "
            "ids past them cannot be looked up. Use the checkpoint's own tokenizer, or resize the model's embeddings "
            "(`model.resize_token_embeddings(len(tokenizer))`) and save it first."
        )
