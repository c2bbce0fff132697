"""`eurobert-hf finetune`: EuroBERT for text classification, token classification, question answering, multiple choice.

Data come from local files or a `datasets` dataset; the metrics are the package's offline `evaluate` metrics (accuracy
and macro-F1, entity-level F1, SQuAD exact match / F1). With `--use_lora`, LoRA adapters are trained and merged into
the saved model, so the output folder is a plain Hub-ready EuroBERT.

The optimisation defaults follow the EuroBERT authors' fine-tuning recipe: AdamW with betas (0.9, 0.95) and epsilon
1e-5, weight decay 0.1, linear decay after a 10% warmup, and a learning rate chosen by model size (3.6e-5 for
EuroBERT-210m and -610m, 2.8e-5 for EuroBERT-2.1B; the `nan` default below stands for that choice). Flags and
`--config` override them; the model card records the values used.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset
from transformers import (
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    DataCollatorForMultipleChoice,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    EvalPrediction,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)

from ..hub import eval_results_from_metrics, render_eurobert_model_card, training_hyperparameters
from ..metrics import Accuracy, MacroF1, SeqEvalF1, SquadMetric
from .common import (
    CommandError,
    DataArguments,
    check_output_dir,
    data_sources,
    finish,
    hub_model_id,
    load_model_config,
    load_splits,
    load_tokenizer,
    metric_rows,
    note,
    parse_arguments,
    push_output,
    require_columns,
    resolve_resume,
    train,
    write_output_folder,
)
from .validation import (
    check_rows,
    check_vocabulary,
    label_key,
    label_kind,
    label_value,
    list_of,
    location,
    non_empty_text_value,
    same_label_kind,
    same_length,
    shown,
    text_value,
)

# The EuroBERT authors' fine-tuning recipe, as one of them (H. Gisserot-Boukhlef) gave it for the paper's XNLI and
# PAWS-X results (arXiv 2503.05500; https://github.com/Nicolas-BZRD/EuroBERT/issues/3): AdamW with betas (0.9, 0.95)
# and epsilon 1e-5, weight decay 0.1, a linear decay after a warmup over 10% of the steps, an effective batch of 32
# (left to the user here: it is a memory choice). It gives no maximum length; 512 tokens is ours.
# transformers 5 reads a `warmup_steps` below 1 as a ratio and dropped `warmup_ratio`.
_WARMUP_FIELD = "warmup_ratio" if "warmup_ratio" in {f.name for f in fields(TrainingArguments)} else "warmup_steps"
RECIPE = {
    "adam_beta1": 0.9,
    "adam_beta2": 0.95,
    "adam_epsilon": 1e-5,
    "weight_decay": 0.1,
    "lr_scheduler_type": "linear",
    _WARMUP_FIELD: 0.1,
    # Not a rate: it stands for "not given", so that the rate follows the model's size (see `recipe_learning_rate`).
    "learning_rate": math.nan,
}
# Their best learning rates by model size (hidden size 768: 210m, 1152: 610m, 2304: 2.1B), for XNLI; on PAWS-X they
# were 3.6e-5, 4.6e-5 and 3.6e-5.
LEARNING_RATES_BY_HIDDEN_SIZE = ((768, 3.6e-5), (1152, 3.6e-5), (2304, 2.8e-5))


def recipe_learning_rate(config: Any) -> float:
    """The authors' learning rate for a EuroBERT of this size (the next published size up, else the largest)."""
    for hidden_size, learning_rate in LEARNING_RATES_BY_HIDDEN_SIZE:
        if config.hidden_size <= hidden_size:
            return learning_rate
    return LEARNING_RATES_BY_HIDDEN_SIZE[-1][1]


TASKS = ("text-classification", "token-classification", "question-answering", "multiple-choice")
_AUTO_CLASSES = {
    "text-classification": AutoModelForSequenceClassification,
    "token-classification": AutoModelForTokenClassification,
    "question-answering": AutoModelForQuestionAnswering,
    "multiple-choice": AutoModelForMultipleChoice,
}
# PEFT task types (they decide which head modules are trained in full); multiple choice has none in PEFT.
_PEFT_TASK_TYPES = {
    "text-classification": "SEQ_CLS",
    "token-classification": "TOKEN_CLS",
    "question-answering": "QUESTION_ANS",
}
_MULTIPLE_CHOICE_HEAD = ["dense", "classifier"]


@dataclass
class FinetuneArguments:
    """What to fine-tune, on which columns, and how (LoRA)."""

    model_name_or_path: str = field(metadata={"help": "A EuroBERT checkpoint: local folder or Hub name."})
    task: str = field(metadata={"help": "The task to fine-tune for.", "choices": list(TASKS)})
    text_column: str = field(default="text", metadata={"help": "Text classification: the text column."})
    text_pair_column: str | None = field(
        default=None, metadata={"help": "Text classification: an optional second text (sentence pairs)."}
    )
    label_column: str = field(
        default="label",
        metadata={"help": "Text classification and multiple choice: the label (class name or id; choice index)."},
    )
    tokens_column: str = field(default="tokens", metadata={"help": "Token classification: the list of words."})
    tags_column: str = field(default="ner_tags", metadata={"help": "Token classification: the tag of each word."})
    question_column: str = field(
        default="question", metadata={"help": "Question answering and multiple choice: the question."}
    )
    context_column: str = field(default="context", metadata={"help": "Question answering: the context."})
    answers_column: str = field(
        default="answers",
        metadata={"help": "Question answering: SQuAD-style answers `{'text': [...], 'answer_start': [...]}`."},
    )
    choices_column: str = field(
        default="choices", metadata={"help": "Multiple choice: the list of candidate answers."}
    )
    max_length: int = field(default=512, metadata={"help": "Maximum number of tokens per input (truncated beyond)."})
    max_answer_length: int = field(
        default=30, metadata={"help": "Question answering: longest predicted answer, in tokens."}
    )
    classifier_pooling: str | None = field(
        default=None,
        metadata={
            "help": "Classification heads: override the checkpoint's pooling.",
            "choices": ["bos", "mean", "late"],
        },
    )
    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (merged into the saved model)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (alpha)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules that get adapters; defaults to PEFT's EuroBERT defaults."}
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "Replace a classification head of the checkpoint that has another number of labels."},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow the checkpoint's own model code."})


@dataclass
class PreparedTask:
    """The tokenized data, model factory inputs and metrics of one task."""

    train_dataset: Dataset
    eval_dataset: Dataset | None
    collator: Any
    model_kwargs: dict[str, Any]
    compute_metrics: Callable[[EvalPrediction], dict[str, float]] | None


def _label_values(dataset: Dataset, column: str, per_item: bool) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for value in dataset[column]:
        for item in value if per_item else [value]:
            values.setdefault(label_key(item), item)
    return values


def _label_names(
    train_data: Dataset, eval_data: Dataset | None, sources: tuple[str, str], column: str, per_item: bool = False
) -> list[str]:
    """The class names, from the training data: integer ids in numeric order, names in alphabetical order. Refuses
    labels of another kind or never seen in training in the evaluation data, and training data with one class."""
    feature = train_data.features[column]
    feature = getattr(feature, "feature", feature[0] if isinstance(feature, list) else feature)
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    same_label_kind(train_data, eval_data, sources, column, per_item)
    values = _label_values(train_data, column, per_item)
    numeric = not any(isinstance(value, str | bool) for value in values.values())
    names = sorted(values, key=lambda name: values[name]) if numeric else sorted(values)
    if eval_data is not None:
        unseen = sorted(set(_label_values(eval_data, column, per_item)) - set(names))
        if unseen:
            row = next(
                row
                for row, value in enumerate(eval_data[column])
                if {label_key(item) for item in (value if per_item else [value])} & set(unseen)
            )
            raise CommandError(
                f"{location(sources[1], row, column)}: the evaluation data has labels that the training data "
                f"({sources[0]}) never shows: {unseen}; the model could not learn them. Add training rows for them, "
                "or remove those rows."
            )
    if len(names) < 2:
        raise CommandError(
            f"The training data ({sources[0]}) has a single class in {column!r} ({names}); a classifier needs at "
            "least two (`finetune` does not train regression). Check the column, or add examples of other classes."
        )
    return names


def _label_maps(names: list[str]) -> dict[str, Any]:
    return {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {name: index for index, name in enumerate(names)},
    }


def _label_id(value: Any, names: list[str], column: str) -> int:
    name = label_key(value)
    if name not in names:
        raise CommandError(f"Unknown label {value!r} in {column!r}; the training labels are {names}.")
    return names.index(name)


def _is_class_label(dataset: Dataset, column: str) -> bool:
    feature = dataset.features[column]
    return isinstance(getattr(feature, "feature", feature), ClassLabel)


def _map(dataset: Dataset | None, function: Callable, **kwargs: Any) -> Dataset | None:
    if dataset is None:
        return None
    return dataset.map(function, remove_columns=dataset.column_names, **kwargs)


def _text_classification(
    args: FinetuneArguments,
    train_data: Dataset,
    eval_data: Dataset | None,
    tokenizer: PreTrainedTokenizerBase,
    sources: tuple[str, str],
) -> PreparedTask:
    names = _label_names(train_data, eval_data, sources, args.label_column)
    class_label = _is_class_label(train_data, args.label_column)

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        pairs = batch[args.text_pair_column] if args.text_pair_column else None
        encoded = tokenizer(batch[args.text_column], pairs, truncation=True, max_length=args.max_length)
        labels = batch[args.label_column]
        encoded["labels"] = [v if class_label else _label_id(v, names, args.label_column) for v in labels]
        return encoded

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        predicted = np.argmax(prediction.predictions, axis=-1).tolist()
        references = np.asarray(prediction.label_ids).tolist()
        return {
            **Accuracy().compute(predictions=predicted, references=references),
            **MacroF1().compute(predictions=predicted, references=references),
        }

    return PreparedTask(
        _map(train_data, tokenize, batched=True),
        _map(eval_data, tokenize, batched=True),
        DataCollatorWithPadding(tokenizer),
        {**_label_maps(names), **({"classifier_pooling": args.classifier_pooling} if args.classifier_pooling else {})},
        compute_metrics,
    )


def _token_classification(
    args: FinetuneArguments,
    train_data: Dataset,
    eval_data: Dataset | None,
    tokenizer: PreTrainedTokenizerBase,
    sources: tuple[str, str],
) -> PreparedTask:
    if not tokenizer.is_fast:
        raise CommandError("Token classification needs a fast tokenizer (it maps sub-word tokens back to words).")
    names = _label_names(train_data, eval_data, sources, args.tags_column, per_item=True)
    class_label = _is_class_label(train_data, args.tags_column)

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(
            batch[args.tokens_column], is_split_into_words=True, truncation=True, max_length=args.max_length
        )
        all_labels = []
        for row, tags in enumerate(batch[args.tags_column]):
            tag_ids = [t if class_label else _label_id(t, names, args.tags_column) for t in tags]
            previous, labels = None, []
            # Only the first token of each word is scored, as the word's tag.
            for word in encoded.word_ids(row):
                labels.append(-100 if word is None or word == previous else tag_ids[word])
                previous = word
            all_labels.append(labels)
        encoded["labels"] = all_labels
        return encoded

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        predicted_ids = np.argmax(prediction.predictions, axis=-1)
        predictions, references = [], []
        for predicted_row, label_row in zip(predicted_ids, prediction.label_ids):
            kept = label_row != -100
            predictions.append([names[i] for i in predicted_row[kept]])
            references.append([names[i] for i in label_row[kept]])
        scores = SeqEvalF1().compute(predictions=predictions, references=references)
        return {name: scores[f"overall_{name}"] for name in ("precision", "recall", "f1", "accuracy")}

    return PreparedTask(
        _map(train_data, tokenize, batched=True),
        _map(eval_data, tokenize, batched=True),
        DataCollatorForTokenClassification(tokenizer),
        _label_maps(names),
        compute_metrics,
    )


def _answers(answers: dict[str, Any]) -> tuple[list[str], list[int]]:
    """The answer texts and character starts of a validated SQuAD-style entry (both empty: unanswerable)."""
    texts, starts = answers["text"], answers["answer_start"]
    return ([texts], [starts]) if isinstance(texts, str) else (list(texts), list(starts))


def _answers_problem(answers: Any, context: str) -> str | None:
    if not isinstance(answers, dict) or "text" not in answers or "answer_start" not in answers:
        return f"expected SQuAD-style answers, {{'text': [...], 'answer_start': [...]}}, got {shown(answers)}."
    texts, starts = answers["text"], answers["answer_start"]
    if isinstance(texts, str):
        texts, starts = [texts], [starts]
    if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
        return f"'text' and 'answer_start' must be lists of the same length, got {shown(answers)}."
    for text, start in zip(texts, starts):
        if not isinstance(text, str) or not text:
            return f"an answer text must be non-empty text, got {shown(text)} (unanswerable: empty lists)."
        if not isinstance(start, int) or isinstance(start, bool):
            return f"an answer_start must be an integer character offset, got {shown(start)}."
        if not 0 <= start <= len(context) - len(text):
            return (
                f"answer {shown(text)} starts at character {start}, outside the context ({len(context)} characters)."
            )
        if context[start : start + len(text)] != text:
            return (
                f"answer {shown(text)} is not at character {start} of the context, which has "
                f"{shown(context[start : start + len(text)])} there."
            )
    return None


def _span_positions(offsets: list, sequence_ids: list, start_char: int, end_char: int) -> tuple[int, int]:
    """Token positions of the answer characters in the context; (0, 0) when truncation cut the answer off."""
    context = [i for i, sequence in enumerate(sequence_ids) if sequence == 1]
    if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return 0, 0
    start = next(i for i in context if offsets[i][1] > start_char)
    end = next(i for i in reversed(context) if offsets[i][0] < end_char)
    return start, end


def _best_span(start_logits: np.ndarray, end_logits: np.ndarray, offsets: list, max_answer_length: int) -> tuple:
    """The best-scoring context span `(score, (start_char, end_char))`; `(-inf, None)` when there is none."""
    best, span = -np.inf, None
    for start in np.argsort(start_logits)[::-1][:20]:
        for end in np.argsort(end_logits)[::-1][:20]:
            if offsets[start] is None or offsets[end] is None or not 0 <= end - start < max_answer_length:
                continue
            score = start_logits[start] + end_logits[end]
            if score > best:
                best, span = score, (offsets[start][0], offsets[end][1])
    return best, span


def _question_answering(
    args: FinetuneArguments,
    train_data: Dataset,
    eval_data: Dataset | None,
    tokenizer: PreTrainedTokenizerBase,
    sources: tuple[str, str],
) -> PreparedTask:
    if not tokenizer.is_fast:
        raise CommandError("Question answering needs a fast tokenizer (it maps answer characters to tokens).")

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(
            batch[args.question_column],
            batch[args.context_column],
            truncation="only_second",
            max_length=args.max_length,
            return_offsets_mapping=True,
        )
        starts, ends, context_offsets = [], [], []
        for row, answers in enumerate(batch[args.answers_column]):
            texts, answer_starts = _answers(answers)
            sequence_ids = encoded.sequence_ids(row)
            offsets = encoded["offset_mapping"][row]
            # An unanswerable question (SQuAD v2) points at the first token, as a cut-off answer does.
            start, end = (
                _span_positions(offsets, sequence_ids, answer_starts[0], answer_starts[0] + len(texts[0]))
                if texts
                else (0, 0)
            )
            starts.append(start)
            ends.append(end)
            context_offsets.append([o if s == 1 else None for o, s in zip(offsets, sequence_ids)])
        encoded["start_positions"], encoded["end_positions"] = starts, ends
        del encoded["offset_mapping"]
        return {**encoded, "context_offsets": context_offsets}

    train_features = _map(train_data, tokenize, batched=True).remove_columns("context_offsets")
    eval_features = _map(eval_data, tokenize, batched=True)
    compute_metrics = None
    if eval_data is not None:
        contexts = eval_data[args.context_column]
        answers = [_answers(a) for a in eval_data[args.answers_column]]
        unanswerable = any(not _answers(a)[0] for data in (train_data, eval_data) for a in data[args.answers_column])
        ids = (
            [str(i) for i in eval_data["id"]]
            if "id" in eval_data.column_names
            else [str(i) for i in range(len(eval_data))]
        )
        context_offsets = eval_features["context_offsets"]
        eval_features = eval_features.remove_columns("context_offsets")

        def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
            start_logits, end_logits = prediction.predictions[:2]
            predictions, references = [], []
            for row, (identifier, context, (texts, answer_starts)) in enumerate(zip(ids, contexts, answers)):
                offsets = context_offsets[row]
                width = len(offsets)
                score, span = _best_span(
                    start_logits[row][:width], end_logits[row][:width], offsets, args.max_answer_length
                )
                # With unanswerable questions in the data (SQuAD v2), "no answer" wins when the first token scores
                # higher than the best span; it is scored as an empty answer.
                no_answer = unanswerable and start_logits[row][0] + end_logits[row][0] > score
                text = context[span[0] : span[1]] if span and not no_answer else ""
                predictions.append({"id": identifier, "prediction_text": text})
                gold = {"text": texts, "answer_start": answer_starts} if texts else {"text": [""], "answer_start": [0]}
                references.append({"id": identifier, "answers": gold})
            return SquadMetric().compute(predictions=predictions, references=references)

    return PreparedTask(train_features, eval_features, DataCollatorWithPadding(tokenizer), {}, compute_metrics)


def _multiple_choice(
    args: FinetuneArguments,
    train_data: Dataset,
    eval_data: Dataset | None,
    tokenizer: PreTrainedTokenizerBase,
    sources: tuple[str, str],
) -> PreparedTask:

    train_choices = len(train_data[0][args.choices_column])
    if eval_data is not None and len(eval_data[0][args.choices_column]) != train_choices:
        raise CommandError(
            f"{location(sources[1], 0, args.choices_column)}: {len(eval_data[0][args.choices_column])} choices per "
            f"question, but the training data ({sources[0]}) has {train_choices}; the model scores a fixed number of "
            "choices."
        )

    def tokenize(example: dict[str, Any]) -> dict[str, Any]:
        choices = example[args.choices_column]
        encoded = tokenizer(
            [example[args.question_column]] * len(choices), choices, truncation=True, max_length=args.max_length
        )
        return {**encoded, "labels": int(example[args.label_column])}

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        predicted = np.argmax(prediction.predictions, axis=-1).tolist()
        return Accuracy().compute(predictions=predicted, references=np.asarray(prediction.label_ids).tolist())

    model_kwargs = {"classifier_pooling": args.classifier_pooling} if args.classifier_pooling else {}
    return PreparedTask(
        _map(train_data, tokenize),
        _map(eval_data, tokenize),
        DataCollatorForMultipleChoice(tokenizer),
        model_kwargs,
        compute_metrics,
    )


_COLUMNS = {
    "text-classification": ("text_column", "label_column", "text_pair_column"),
    "token-classification": ("tokens_column", "tags_column"),
    "question-answering": ("question_column", "context_column", "answers_column"),
    "multiple-choice": ("question_column", "choices_column", "label_column"),
}


def _choice_index(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():  # an index read into a column of decimals
        return None
    return f"expected the index of the right choice (an integer from 0), got {shown(value)}."


def data_check(args: FinetuneArguments) -> Callable[[Dataset, str], None]:
    """The checks of one dataset for `args.task`, run before any model is loaded (see `load_splits`)."""
    names = [getattr(args, name) for name in _COLUMNS[args.task] if getattr(args, name)]
    flags = "/".join(f"`--{name}`" for name in _COLUMNS[args.task])

    def check(dataset: Dataset, source: str) -> None:
        require_columns([dataset], names, args.task.replace("-", " ") + f" (in {source})", f"Name them with {flags}.")
        if args.task == "text-classification":
            checkers = {args.text_column: text_value, args.label_column: label_value}
            check_rows(
                dataset, source, {**checkers, **({args.text_pair_column: text_value} if args.text_pair_column else {})}
            )
            label_kind(dataset, source, args.label_column)
        elif args.task == "token-classification":
            check_rows(
                dataset,
                source,
                {args.tokens_column: list_of(text_value, "words"), args.tags_column: list_of(label_value, "tags")},
            )
            same_length(dataset, source, args.tokens_column, args.tags_column)
            label_kind(dataset, source, args.tags_column, per_item=True)
        elif args.task == "question-answering":
            check_rows(
                dataset,
                source,
                {args.question_column: non_empty_text_value, args.context_column: non_empty_text_value},
            )
            for row, (context, answers) in enumerate(zip(dataset[args.context_column], dataset[args.answers_column])):
                problem = _answers_problem(answers, context)
                if problem:
                    raise CommandError(f"{location(source, row, args.answers_column)}: {problem}")
        else:
            check_rows(
                dataset,
                source,
                {
                    args.question_column: text_value,
                    args.choices_column: list_of(text_value, "choices", minimum=2),
                    args.label_column: _choice_index,
                },
            )
            choices, labels = dataset[args.choices_column], dataset[args.label_column]
            for row, (options, label) in enumerate(zip(choices, labels)):
                if len(options) != len(choices[0]):
                    raise CommandError(
                        f"{location(source, row, args.choices_column)}: {len(options)} choices, but row 1 has "
                        f"{len(choices[0])}; every question needs the same number of choices."
                    )
                if not 0 <= label < len(options):
                    raise CommandError(
                        f"{location(source, row, args.label_column)}: {label_key(label)} is not the index of one of "
                        f"the {len(options)} choices (0 to {len(options) - 1})."
                    )

    return check


_PREPARE = {
    "text-classification": _text_classification,
    "token-classification": _token_classification,
    "question-answering": _question_answering,
    "multiple-choice": _multiple_choice,
}


def _lora_config(args: FinetuneArguments) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        task_type=_PEFT_TASK_TYPES.get(args.task),
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.lora_target_modules,
        modules_to_save=_MULTIPLE_CHOICE_HEAD if args.task == "multiple-choice" else None,
    )


def _check_head(args: FinetuneArguments, config: Any, model_kwargs: dict[str, Any]) -> None:
    """Refuses a checkpoint whose head for this task has another number of labels, unless asked to replace it."""
    head = _AUTO_CLASSES[args.task].__name__.removeprefix("AutoModel")
    has_head = any(name.endswith(head) for name in getattr(config, "architectures", None) or [])
    wanted = model_kwargs.get("num_labels")
    if has_head and wanted is not None and config.num_labels != wanted and not args.ignore_mismatched_sizes:
        raise CommandError(
            f"{args.model_name_or_path!r} already has a {args.task} head for {config.num_labels} labels, but the data "
            f"has {wanted}. Pass `--ignore_mismatched_sizes` to replace the head by a new one, or fine-tune from the "
            "base model."
        )


def _dataset_label(data: DataArguments) -> str:
    return data.dataset_name or Path(data.train_file).name


def run(argv: Sequence[str]) -> int:
    """Runs `eurobert-hf finetune` with `argv`; returns the exit status."""
    args, data, training_args, output_args = parse_arguments(
        (FinetuneArguments, DataArguments, TrainingArguments), argv, "eurobert-hf finetune", __doc__, RECIPE
    )
    check_output_dir(training_args, output_args)
    resume = resolve_resume(training_args)
    config = load_model_config(args.model_name_or_path, "model", args.trust_remote_code)
    if config.model_type != "eurobert":
        raise CommandError(
            f"`finetune` trains EuroBERT, but {args.model_name_or_path!r} is a {config.model_type!r} model. Pass a "
            "EuroBERT checkpoint (e.g. EuroBERT/EuroBERT-210m)."
        )
    if math.isnan(training_args.learning_rate):
        training_args.learning_rate = recipe_learning_rate(config)
        note(
            f"learning rate {training_args.learning_rate:g}, the EuroBERT authors' rate for this model size (hidden "
            f"size {config.hidden_size}); `--learning_rate` sets another."
        )
    tokenizer = load_tokenizer(args.model_name_or_path, "model", args.trust_remote_code)
    check_vocabulary(tokenizer, config, "model", args.model_name_or_path)
    train_data, eval_data = load_splits(data, training_args.seed, data_check(args))
    task = _PREPARE[args.task](args, train_data, eval_data, tokenizer, data_sources(data))
    _check_head(args, config, task.model_kwargs)

    model = _AUTO_CLASSES[args.task].from_pretrained(
        args.model_name_or_path,
        trust_remote_code=args.trust_remote_code,
        ignore_mismatched_sizes=args.ignore_mismatched_sizes,
        **task.model_kwargs,
    )
    if args.use_lora:
        from peft import get_peft_model

        model = get_peft_model(model, _lora_config(args))
    if task.eval_dataset is None and training_args.eval_strategy != "no":
        note("no evaluation data (pass `--eval_file`, `--eval_split` or `--eval_split_size`): evaluation is off.")
        training_args.eval_strategy = "no"

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=task.train_dataset,
        eval_dataset=task.eval_dataset,
        data_collator=task.collator,
        processing_class=tokenizer,
        compute_metrics=task.compute_metrics,
    )
    result = train(trainer, resume, "finetune", argv)
    metrics = trainer.evaluate() if task.eval_dataset is not None else {}

    final_model = trainer.model.merge_and_unload() if args.use_lora else trainer.model
    base_model = None if Path(args.model_name_or_path).exists() else args.model_name_or_path
    card = render_eurobert_model_card(
        hub_model_id(training_args),
        task=args.task,
        model=final_model,
        base_model=base_model,
        datasets=data.dataset_name if data.dataset_name and not Path(data.dataset_name).exists() else None,
        eval_results=eval_results_from_metrics(metrics, task_type=args.task, dataset_name=_dataset_label(data)),
        hyperparameters={
            **training_hyperparameters(training_args),
            **{
                name: getattr(training_args, name)
                for name in ("adam_beta1", "adam_beta2", "adam_epsilon", "weight_decay")
            },
            "max_length": args.max_length,
        },
    )
    output_dir = write_output_folder(final_model, training_args.output_dir, tokenizer=tokenizer, model_card=card)
    rows = [("task", args.task), ("training samples", len(task.train_dataset)), ("steps", result.global_step)]
    rows += [("train loss", result.training_loss), *metric_rows(metrics, "eval_")]
    return finish(
        f"eurobert-hf finetune ({'LoRA, merged' if args.use_lora else 'full'})",
        rows,
        output_dir,
        training_args,
        lambda: push_output(final_model, training_args, tokenizer=tokenizer, model_card=card),
    )
