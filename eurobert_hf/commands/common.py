"""What the `eurobert-hf` commands share: argument parsing, data and model loading, output folders, interruption."""

import argparse
import dataclasses
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import datasets
import yaml
from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import TrlParser

from ..hub import model_folder_staging, prune_auto_map, push_to_hub, write_model_folder
from ..hub.remote_code import remote_code_sources
from . import HUB_TOKEN_VARIABLE, CommandError, Interrupted
from .validation import check_text_file

# Local data files by extension -> the `datasets` builder that reads them.
DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
CONFIG_FILE_HELP = (
    "Every flag can also be set in a YAML file passed with `--config FILE.yaml` (keys are the flag names without "
    "dashes); flags given on the command line override the file."
)
# The Trainer writes this file last when it saves a checkpoint, so a checkpoint that has it is complete.
TRAINER_STATE_FILE = "trainer_state.json"
_RESUME_LAST = ("true", "last")
# The `TrainingArguments` fields that can hold a Hub token (`push_to_hub_token` is transformers 4's deprecated alias).
HUB_TOKEN_FIELDS = ("hub_token", "push_to_hub_token")


# transformers 5 removed `TrainingArguments.overwrite_output_dir`; the commands then declare the flag themselves.
_OVERWRITE_FIELD = (
    "overwrite_output_dir",
    bool,
    dataclasses.field(
        default=False,
        metadata={"help": "Write into `output_dir` even if it is not empty (files with the same names are replaced)."},
    ),
)
_TRAINING_ARGUMENTS_OVERWRITE = "overwrite_output_dir" in {f.name for f in dataclasses.fields(TrainingArguments)}
OutputArguments = dataclasses.make_dataclass(
    "OutputArguments", [] if _TRAINING_ARGUMENTS_OVERWRITE else [_OVERWRITE_FIELD]
)
OutputArguments.__doc__ = "Output-folder options that `TrainingArguments` lacks on the installed transformers."


@dataclasses.dataclass
class DataArguments:
    """Where a command reads its data: local files or a `datasets` dataset (Hub name or local folder)."""

    dataset_name: str | None = dataclasses.field(
        default=None,
        metadata={
            "help": "A dataset on the Hugging Face Hub, a local data file (.json, .jsonl, .csv, .parquet; its split "
            "is `train`), a folder of such files (split by file name) or a folder written by `save_to_disk`."
        },
    )
    dataset_config: str | None = dataclasses.field(
        default=None, metadata={"help": "The dataset's configuration (subset) name."}
    )
    train_file: str | None = dataclasses.field(
        default=None, metadata={"help": "A local training file: .json, .jsonl, .csv or .parquet."}
    )
    eval_file: str | None = dataclasses.field(
        default=None, metadata={"help": "A local evaluation file (same formats as `train_file`)."}
    )
    train_split: str = dataclasses.field(
        default="train", metadata={"help": "The split of `dataset_name` to train on."}
    )
    eval_split: str | None = dataclasses.field(
        default=None, metadata={"help": "The split of `dataset_name` to evaluate on (e.g. `validation`)."}
    )
    eval_split_size: float | None = dataclasses.field(
        default=None,
        metadata={
            "help": "Hold out part of the training data for evaluation when there is no eval file or split: a "
            "fraction (< 1) or a number of samples (>= 1). The split is drawn with `--seed`."
        },
    )
    max_train_samples: int | None = dataclasses.field(
        default=None, metadata={"help": "Train on the first N samples only (quick runs)."}
    )
    max_eval_samples: int | None = dataclasses.field(
        default=None, metadata={"help": "Evaluate on the first N held-out samples only."}
    )


def parse_command_line(
    dataclass_types: Sequence[type],
    argv: Sequence[str],
    prog: str,
    description: str,
    defaults: dict[str, Any] | None = None,
) -> tuple:
    """Parses `argv` (and a `--config` YAML file) into the dataclasses with `TrlParser`; a missing or invalid config
    file is a `CommandError` that names it."""
    parser = TrlParser(
        dataclass_types,
        prog=prog,
        description=description,
        epilog=CONFIG_FILE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(**(defaults or {}))
    try:
        return parser.parse_args_and_config(args=list(argv))
    except FileNotFoundError as error:
        raise CommandError(f"The config file {error.filename} does not exist.") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else "The config file"
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise CommandError(f"{where}: not valid YAML ({problem}).") from None


def parse_arguments(
    dataclass_types: Sequence[type],
    argv: Sequence[str],
    prog: str,
    description: str,
    defaults: dict[str, Any] | None = None,
) -> tuple:
    """Parses `argv` (and a `--config` YAML file) into the dataclasses, then an `OutputArguments` as last item.

    `defaults` replaces the dataclasses' defaults for this command; a config file and the command line override them.
    """
    parsed = parse_command_line([*dataclass_types, OutputArguments], argv, prog, description, defaults)
    for arguments in parsed:
        hand_hub_token_to_hub_client(arguments)
    return parsed


def hand_hub_token_to_hub_client(arguments: Any) -> None:
    """Moves `--hub_token` out of the parsed arguments into `HF_TOKEN`, which `huggingface_hub` reads on every call.

    The Trainer pickles its arguments into every checkpoint and into the pushed folder (`training_args.bin`), so a
    token left there would be written to disk and uploaded. The Trainer's Hub calls (repository creation, checkpoint
    pushes) and the final push authenticate through the environment instead; `eurobert_hf.cli.main` restores it.
    """
    for name in HUB_TOKEN_FIELDS:
        token = getattr(arguments, name, None)
        if token:
            os.environ[HUB_TOKEN_VARIABLE] = token
            setattr(arguments, name, None)


def overwrite_requested(training_args: TrainingArguments, output_args: Any) -> bool:
    return bool(
        getattr(output_args, "overwrite_output_dir", False) or getattr(training_args, "overwrite_output_dir", False)
    )


def note(message: str) -> None:
    """A message for the user that is not an error (stderr, so that stdout keeps the summary only)."""
    print(f"eurobert-hf: {message}", file=sys.stderr)


def _reader_error(error: BaseException) -> str:
    """The innermost cause's first line: `datasets` wraps reader errors in a generic "error while generating"."""
    messages = []
    while error is not None:
        messages.append(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
        error = error.__cause__ or error.__context__
    return messages[-1]


def _load_file(path: str, kind: str) -> Dataset:
    if not os.path.isfile(path):
        raise CommandError(f"The {kind} file {path!r} does not exist.")
    builder = DATA_FILE_BUILDERS.get(Path(path).suffix.lower())
    if builder is None:
        raise CommandError(
            f"Cannot read {path!r}: the supported data files are {', '.join(DATA_FILE_BUILDERS)}. Convert the file "
            "or pass a dataset with `--dataset_name`."
        )
    check_text_file(path)
    # The readers also log their errors; the user gets them once, as the command's error line.
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        return load_dataset(builder, data_files=path, split="train")
    except Exception as error:  # noqa: BLE001 - every reader error is a problem with the user's file
        raise CommandError(f"Cannot read {path!r} as {builder}: {_reader_error(error)}") from None
    finally:
        datasets.logging.set_verbosity(verbosity)


def _load_named(name: str, config: str | None) -> DatasetDict:
    if os.path.isfile(name):
        return DatasetDict({"train": _load_file(name, "data")})
    if os.path.isdir(name):
        if (Path(name) / "dataset_dict.json").is_file():
            return load_from_disk(name)
        if (Path(name) / "state.json").is_file():
            return DatasetDict({"train": load_from_disk(name)})
        for path in sorted(Path(name).rglob("*")):
            check_text_file(path)
    try:
        loaded = load_dataset(name, config)
    except Exception as error:  # noqa: BLE001 - missing datasets, configs and offline errors all come here
        raise CommandError(
            f"Cannot load the dataset {name!r}"
            + (f" (configuration {config!r})" if config else "")
            + f": {_reader_error(error)}. Check the name, or pass local files with `--train_file`."
        ) from None
    return loaded


def _first(dataset: Dataset, count: int | None) -> Dataset:
    return dataset if count is None else dataset.select(range(min(count, len(dataset))))


def data_sources(data: DataArguments) -> tuple[str, str]:
    """How errors name the training and the evaluation data: a file, a dataset split or the held-out samples."""
    train = data.train_file or f"{data.dataset_name} (split {data.train_split!r})"
    if data.eval_file:
        return train, data.eval_file
    if data.eval_split:
        return train, f"{data.dataset_name} (split {data.eval_split!r})"
    return train, f"the samples held out of {train}"


def load_splits(
    data: DataArguments, seed: int, check: Callable[[Dataset, str], None] | None = None
) -> tuple[Dataset, Dataset | None]:
    """The training dataset and the evaluation dataset (`None` when the user asked for no evaluation data).

    `check(dataset, source)` runs on each dataset as read, before any split or selection, so that the row numbers in
    its errors are those of the file or dataset split named by `source` (see `data_sources`).
    """
    if bool(data.dataset_name) == bool(data.train_file):
        raise CommandError("Pass exactly one data source: `--train_file FILE` or `--dataset_name NAME`.")
    check = check or (lambda dataset, source: None)
    train_source, eval_source = data_sources(data)
    eval_dataset = None
    if data.train_file:
        train_dataset = _load_file(data.train_file, "training")
        if data.eval_split:
            raise CommandError(
                "`--eval_split` selects a split of `--dataset_name`; with local files use `--eval_file`."
            )
    else:
        splits = _load_named(data.dataset_name, data.dataset_config)
        for split in (data.train_split, data.eval_split):
            if split is not None and split not in splits:
                raise CommandError(
                    f"The dataset {data.dataset_name!r} has no split {split!r}; its splits are {sorted(splits)}."
                )
        train_dataset = splits[data.train_split]
        if data.eval_split:
            eval_dataset = splits[data.eval_split]
    if data.eval_file:
        eval_dataset = _load_file(data.eval_file, "evaluation")
    check(train_dataset, train_source)
    if eval_dataset is not None:
        check(eval_dataset, eval_source)
    if data.eval_split_size is not None:
        if eval_dataset is not None:
            raise CommandError("`--eval_split_size` holds out training data; it cannot be combined with eval data.")
        size = data.eval_split_size
        test_size = int(size) if size >= 1 else size
        if not 0 < size < len(train_dataset):
            raise CommandError(
                f"`--eval_split_size {size}` must be a fraction in (0, 1) or a count below the {len(train_dataset)} "
                "training samples."
            )
        split = train_dataset.train_test_split(test_size=test_size, seed=seed)
        train_dataset, eval_dataset = split["train"], split["test"]
    train_dataset = _first(train_dataset, data.max_train_samples)
    if eval_dataset is not None:
        eval_dataset = _first(eval_dataset, data.max_eval_samples)
    if len(train_dataset) == 0:
        raise CommandError("The training data is empty.")
    return train_dataset, eval_dataset


def require_columns(datasets: Iterable[Dataset | None], columns: Iterable[str], purpose: str, fix: str) -> None:
    """Raises a `CommandError` naming the columns a dataset lacks for `purpose` and how to fix it (`None` entries,
    such as an absent eval split, are skipped)."""
    columns = list(columns)
    for dataset in datasets:
        if dataset is None:
            continue
        missing = [column for column in columns if column not in dataset.column_names]
        if missing:
            raise CommandError(
                f"The data lacks the column(s) {missing} needed for {purpose}; its columns are "
                f"{dataset.column_names}. {fix}"
            )


def load_model_config(name_or_path: str, who: str, trust_remote_code: bool = False) -> PretrainedConfig:
    """The model's config, or a `CommandError` saying the model cannot be found."""
    try:
        return AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        where = (
            "no such local folder"
            if os.path.isabs(name_or_path) or name_or_path.startswith(".")
            else str(error).splitlines()[0]
        )
        raise CommandError(
            f"Cannot load the {who} {name_or_path!r} ({where}). Pass a local folder saved with `save_pretrained` or "
            "the name of a model on the Hugging Face Hub."
        ) from None


def load_tokenizer(name_or_path: str, who: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer; without a padding token, its end-of-sequence token pads (and the user is told)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise CommandError(f"Cannot load the {who}'s tokenizer from {name_or_path!r}: {error}") from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise CommandError(
                f"The {who}'s tokenizer ({name_or_path!r}) has neither a padding token nor an end-of-sequence token. "
                "Add a padding token to it (`tokenizer.add_special_tokens({'pad_token': ...})`) and save it again."
            )
        tokenizer.pad_token = tokenizer.eos_token
        note(f"the {who}'s tokenizer has no padding token; using its end-of-sequence token {tokenizer.eos_token!r}.")
    return tokenizer


def last_complete_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint folder with the highest step that was completely written, if any."""
    pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    checkpoints = [(int(m.group(1)), path) for path in folder.iterdir() if (m := pattern.match(path.name))]
    for _, path in sorted(checkpoints, reverse=True):
        if (path / TRAINER_STATE_FILE).is_file():
            return path
    return None


def resolve_resume(training_args: TrainingArguments) -> str | None:
    """The checkpoint to resume from: `--resume_from_checkpoint PATH`, or `true`/`last` for the latest complete one."""
    value = training_args.resume_from_checkpoint
    if value is None:
        return None
    if str(value).lower() in _RESUME_LAST:
        checkpoint = last_complete_checkpoint(training_args.output_dir)
        if checkpoint is None:
            raise CommandError(f"There is no complete checkpoint in {training_args.output_dir!r} to resume from.")
        return str(checkpoint)
    if not (Path(value) / TRAINER_STATE_FILE).is_file():
        raise CommandError(
            f"{value!r} is not a complete checkpoint (a `checkpoint-N` folder with {TRAINER_STATE_FILE}). Pass one "
            "from the output folder, or `--resume_from_checkpoint last`."
        )
    return str(value)


def check_output_dir(training_args: TrainingArguments, output_args: Any) -> None:
    """Refuses a non-empty output folder unless overwriting or resuming was asked for."""
    folder = Path(training_args.output_dir)
    if folder.exists() and not folder.is_dir():
        raise CommandError(f"The output path {str(folder)!r} is a file; choose a folder with `--output_dir`.")
    if (
        folder.is_dir()
        and any(folder.iterdir())
        and training_args.resume_from_checkpoint is None
        and not overwrite_requested(training_args, output_args)
    ):
        raise CommandError(
            f"The output folder {str(folder)!r} is not empty. Pass `--overwrite_output_dir` to write into it anyway, "
            "`--resume_from_checkpoint last` to continue its run, or choose another `--output_dir`."
        )


# Flags left out of the printed resume command: the checkpoint is replaced, and a secret is never printed.
_NOT_REPEATED_FLAGS = ("--resume_from_checkpoint", *(f"--{name}" for name in HUB_TOKEN_FIELDS))


def _resume_command(argv: Sequence[str], command: str, checkpoint: Path) -> str:
    """The shell command that resumes the run (shell-quoted; a Hub token is left out: `HF_TOKEN` or a login gives it)."""
    kept, skip = [], False
    for argument in argv:
        if skip:
            skip = False
        elif argument in _NOT_REPEATED_FLAGS:
            skip = True
        elif not argument.startswith(tuple(f"{flag}=" for flag in _NOT_REPEATED_FLAGS)):
            kept.append(argument)
    return shlex.join(["eurobert-hf", command, *kept, "--resume_from_checkpoint", str(checkpoint)])


def _ship_code_with_checkpoint_pushes(trainer: Any) -> None:
    """Puts EuroBERT's code files in the output folder when the Trainer pushes checkpoints.

    Each checkpoint push uploads the output folder, into which the Trainer copies a checkpoint's weights and config
    but not its code files; with them there, every pushed revision holds the code its `auto_map` names (the final
    save replaces them with its own copies).
    """
    model = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    if not trainer.args.push_to_hub or getattr(model.config, "model_type", None) != "eurobert":
        return
    output_dir = Path(trainer.args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, source in remote_code_sources().items():
        (output_dir / name).write_text(source, encoding="utf-8")


def train(trainer: Any, resume_from_checkpoint: str | None, command: str, argv: Sequence[str]) -> Any:
    """Runs `trainer.train`; on Ctrl-C, raises `Interrupted` naming the last complete checkpoint and how to resume.

    Before training, `auto_map` entries into other repositories leave the model's config and the tokenizer, so that
    no checkpoint, checkpoint push or final folder names another repository's code.
    """
    prune_auto_map(trainer.model, trainer.processing_class)
    _ship_code_with_checkpoint_pushes(trainer)
    try:
        return trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    except KeyboardInterrupt:
        checkpoint = last_complete_checkpoint(trainer.args.output_dir)
        if checkpoint is None:
            raise Interrupted(
                "Interrupted before the first checkpoint was saved, so there is nothing to resume from (checkpoints "
                "are saved every `--save_steps`). Run the command again with `--overwrite_output_dir`."
            ) from None
        raise Interrupted(
            f"Interrupted. The last complete checkpoint is {checkpoint}. Resume the run with:\n  "
            + _resume_command(argv, command, checkpoint)
        ) from None


def write_output_folder(
    model: Any, output_dir: str | os.PathLike, *, tokenizer: Any, model_card: Any, remote_code: bool | None = None
) -> Path:
    """Writes the Hub-ready model folder (weights, config, tokenizer, card, EuroBERT remote code) into `output_dir`.

    The checkpoints stay next to it, as with `Trainer.save_model`. The files replace those of the previous save into
    this folder (and the ones it no longer writes go), only once all are written (`model_folder_staging`).
    """
    with model_folder_staging(output_dir, overwrite=True) as staging:
        write_model_folder(
            model, staging, tokenizer=tokenizer, model_card=model_card, remote_code=remote_code,
            model_id=Path(output_dir).absolute().name,
        )  # fmt: skip
    return Path(output_dir)


def hub_model_id(training_args: TrainingArguments) -> str:
    """The repository the model is pushed to: `--hub_model_id`, else the output folder's name."""
    return training_args.hub_model_id or Path(training_args.output_dir).absolute().name


def push_output(model: Any, training_args: TrainingArguments, *, tokenizer: Any, model_card: Any) -> str:
    """Pushes the Hub-ready folder (the same files as `write_output_folder`) in one commit; returns its URL.

    The client authenticates with `HF_TOKEN` (where `parse_arguments` put `--hub_token`) or the logged-in token.
    """
    commit = push_to_hub(
        model,
        hub_model_id(training_args),
        tokenizer=tokenizer,
        model_card=model_card,
        private=training_args.hub_private_repo,
        revision=getattr(training_args, "hub_revision", None),
    )
    return commit.commit_url


def metric_rows(metrics: dict[str, Any], prefix: str) -> list[tuple[str, Any]]:
    """`(name, value)` rows of a `Trainer` metrics dict, without the run statistics."""
    skipped = ("runtime", "samples_per_second", "steps_per_second", "total_flos", "epoch")
    return [
        (key, value)
        for key, value in metrics.items()
        if key.startswith(prefix) and not key.endswith(skipped) and isinstance(value, int | float)
    ]


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_summary(title: str, rows: Iterable[tuple[str, Any]]) -> None:
    """Prints a two-column table (name, value) under `title`."""
    rows = [(str(name), _format_value(value)) for name, value in rows]
    name_width = max([len(name) for name, _ in rows] + [len(title)])
    value_width = max([len(value) for _, value in rows] + [1])
    rule = f"+-{'-' * name_width}-+-{'-' * value_width}-+"
    print(rule)
    print(f"| {title.ljust(name_width)} | {' ' * value_width} |")
    print(rule)
    for name, value in rows:
        print(f"| {name.ljust(name_width)} | {value.rjust(value_width)} |")
    print(rule)


def finish(
    title: str, rows: list[tuple[str, Any]], output_dir: Path, training_args: TrainingArguments, push: Any
) -> int:
    """Pushes the written folder when `--push_to_hub` asks for it (`push()` returns the commit URL), prints the
    summary and returns 0. A failed push (an unreachable Hub, a refused token) still prints the summary, since the
    folder is complete, then raises a `CommandError` saying how to push the folder later."""
    failure = None
    if training_args.push_to_hub:
        try:
            rows.append(("pushed to", push()))
        except Exception as error:  # noqa: BLE001 - whatever failed, the local folder is complete and is kept
            failure = error
            rows.append(("pushed to", "failed"))
    rows.append(("model folder", str(output_dir)))
    print_summary(title, rows)
    if failure is not None:
        command = [
            "hf",
            "upload",
            hub_model_id(training_args),
            str(output_dir),
            "--exclude",
            f"{PREFIX_CHECKPOINT_DIR}-*",
        ]
        if training_args.hub_private_repo:
            command.append("--private")
        raise CommandError(
            f"The model folder {str(output_dir)!r} is complete and kept, but pushing it to the Hub failed "
            f"({type(failure).__name__}: {_reader_error(failure)}). Push it later with: {shlex.join(command)}"
        ) from failure
    return 0
