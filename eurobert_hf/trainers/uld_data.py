"""Dataset preparation and batching for ULD: every sample tokenized for the student and for the teacher.

Accepted datasets (TRL's formats):

- language modeling: a `text` column (or the column named by `dataset_text_field`), or any dataset with a
  `formatting_func` that maps a sample to its text. Both models read the same text in their own tokenization, and
  every text token is a completion token (CE and ULD on all of them, as SFT trains every token). When only one
  tokenizer starts the text with a BOS token, only that side could predict the first text token; ULD leaves it out
  on that side, so that both sides start at the same token (the student's cross-entropy still trains it;
  `uld_alignment="offsets"` pairs the tokens by their characters anyway);
- prompt–completion: `prompt` and `completion` columns, both plain strings or both lists of chat messages;
- `messages` (or ShareGPT-style `conversations`): **every assistant turn** is distilled (ULD compares the tokens of
  all assistant turns, a mask that need not be contiguous), each side marking them in its own rendering; the student's
  cross-entropy covers the whole conversation, as in SFT, or only the assistant turns with `assistant_only_loss`.
  Turns after the last assistant turn teach nothing and are left out. A row's `chat_template_kwargs` and `tools`
  reach both chat templates.

Where the student's cross-entropy covers more tokens than ULD compares (language modeling, `messages` without
`assistant_only_loss`, prompt–completion with `completion_only_loss=False`), the rows carry a `completion_mask`
(1 on the tokens ULD compares) and the student's `labels` cover every token.

Each side renders the sample its own way, as in the paper, where only the answer text is shared: conversational
prompts go through the tokenizer's own chat template (with the generation prompt), or, for a tokenizer without one,
through a plain rendering (message contents separated by blank lines); plain-text prompts are tokenized as they are.
Plain-text completions get the tokenizer's EOS token appended, as in SFT. Labels are the token ids on the completion
and `-100` on the prompt (and on padding), on both sides.

Truncation keeps the completions aligned: each side longer than `max_length` loses prompt tokens from the left first
(keeping one, which predicts the first completion token), and only then completion tokens from the right, so both
sides keep the start of the same answer. Samples whose completion is empty, and samples left with no predicted
completion token on either side, are dropped with a warning; a dataset left empty is an error.
"""

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset, IterableDataset
from transformers import PreTrainedTokenizerBase
from trl import maybe_convert_to_chatml

from .uld_alignment import ALIGNMENT_COLUMNS, align_completion_tokens, pad_alignment_groups
from .uld_losses import aligned_token_counts

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
STUDENT_COLUMNS = ("input_ids", "labels")
TEACHER_COLUMNS = ("teacher_input_ids", "teacher_labels")
PREPARED_COLUMNS = STUDENT_COLUMNS + TEACHER_COLUMNS


def split_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Splits a conversation into the prompt (every turn before the last assistant turn) and the completion (that
    turn)."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index]["role"] == "assistant":
            return messages[:index], [messages[index]]
    raise ValueError(
        "A `messages` sample has no assistant turn, so it has no completion to distil. Every conversation needs at "
        "least one message with role 'assistant'."
    )


def _message_text(messages: list[dict[str, Any]]) -> str:
    return "\n\n".join(str(message["content"]) for message in messages)


@dataclass
class _Sample:
    """One sample in a tokenizer-independent form. `completions` are the indices of the messages to learn (the
    assistant turns of a conversation); a plain-text sample has string `prompt` and `completion` instead."""

    prompt: str | list[dict[str, Any]]
    completion: str | list[dict[str, Any]]
    completions: tuple[int, ...] = ()
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    is_text: bool = False

    @property
    def completion_text(self) -> str:
        """The text of what is learnt (offsets alignment needs it verbatim in each rendering)."""
        if isinstance(self.completion, str):
            return self.completion
        if self.completions:
            return _message_text([self.completion[index] for index in self.completions])
        return _message_text(self.completion)


def _render(tokenizer: PreTrainedTokenizerBase, sample: _Sample) -> tuple[str, list[tuple[str, str | None]], bool]:
    """
    Renders a sample for one tokenizer. Returns the full text, the learnt segments as pairs of texts `(text before the
    segment, text up to its end)` (None: up to the end), and whether the text already holds special tokens.
    """
    prompt, completion = sample.prompt, sample.completion
    if isinstance(prompt, str) != isinstance(completion, str):
        raise ValueError(
            "A sample mixes a plain-text prompt with a conversational completion (or the reverse). Use strings for "
            "both `prompt` and `completion`, or lists of messages for both."
        )
    if isinstance(prompt, str):
        completion_text = completion
        if tokenizer.eos_token is not None and not completion_text.endswith(tokenizer.eos_token):
            completion_text += tokenizer.eos_token
        return prompt + completion_text, [(prompt, None)], False
    messages = prompt + completion
    turns = [len(prompt) + index for index in sample.completions] or [len(prompt)]
    last = len(messages) - 1 if not sample.completions else None
    if tokenizer.chat_template is not None:

        def render(part: list[dict[str, Any]], add_generation_prompt: bool = False) -> str:
            return tokenizer.apply_chat_template(
                part, tokenize=False, add_generation_prompt=add_generation_prompt, **sample.template_kwargs
            )

        full_text = render(messages)
        segments = [
            (
                render(messages[:turn], add_generation_prompt=True),
                None if turn in (last, len(messages) - 1) else render(messages[: turn + 1]),
            )
            for turn in turns
        ]
        return full_text, segments, True
    # Without a chat template, the messages' contents separated by blank lines, the EOS token at the end.
    full_text = _message_text(messages)
    if tokenizer.eos_token is not None:
        full_text += tokenizer.eos_token
    segments = []
    for turn in turns:
        before = _message_text(messages[:turn]) + "\n\n" if turn else ""
        segments.append((before, None if turn in (last, len(messages) - 1) else _message_text(messages[: turn + 1])))
    return full_text, segments, False


def _common_prefix_length(ids: list[int], full_ids: list[int]) -> int:
    length = 0
    for token_id, full_id in zip(ids, full_ids):
        if token_id != full_id:
            break
        length += 1
    return length


def _tokenize_side(
    tokenizer: PreTrainedTokenizerBase, sample: _Sample, max_length: int | None, return_offsets: bool
) -> dict[str, Any]:
    full_text, segments, templated = _render(tokenizer, sample)
    encode_kwargs = {"add_special_tokens": False} if templated else {}
    encoding = tokenizer(full_text, return_offsets_mapping=return_offsets, **encode_kwargs)
    input_ids = encoding["input_ids"]

    def boundary(text: str | None) -> int:
        # Tokens may merge across a boundary: it lies where the two tokenizations diverge.
        if text is None:
            return len(input_ids)
        return _common_prefix_length(tokenizer(text, **encode_kwargs)["input_ids"], input_ids)

    learnt = [False] * len(input_ids)
    for before, through in segments:
        for position in range(boundary(before), boundary(through)):
            learnt[position] = True
    prompt_length = learnt.index(True) if any(learnt) else len(input_ids)
    kept = slice(0, len(input_ids))
    if max_length is not None and len(input_ids) > max_length:
        completion_length = len(input_ids) - prompt_length
        kept_prompt = min(prompt_length, max(1, max_length - completion_length))
        kept = slice(prompt_length - kept_prompt, prompt_length - kept_prompt + max_length)
    input_ids, learnt = input_ids[kept], learnt[kept]
    side = {
        "input_ids": input_ids,
        "labels": [token if is_learnt else IGNORE_INDEX for token, is_learnt in zip(input_ids, learnt)],
        "num_segments": len(segments),
    }
    if return_offsets:
        side["text"], side["offsets"] = full_text, encoding["offset_mapping"][kept]
    return side


def tokenize_prompt_completion(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str | list[dict[str, Any]],
    completion: str | list[dict[str, Any]],
    max_length: int | None = None,
) -> tuple[list[int], list[int]]:
    """
    Tokenizes one prompt–completion sample for one model.

    The completion starts where the tokenized prompt and the tokenized prompt+completion diverge (tokens may merge
    across the boundary). Sequences longer than `max_length` lose prompt tokens from the left first (keeping at least
    one, which predicts the first completion token), then completion tokens from the right.

    Returns:
        `tuple[list[int], list[int]]`: the input ids and the labels (`-100` on the prompt).
    """
    side = _tokenize_side(tokenizer, _Sample(prompt, completion), max_length, return_offsets=False)
    return side["input_ids"], side["labels"]


def _column_names(dataset: Dataset | IterableDataset) -> list[str]:
    if dataset.column_names is not None:
        return list(dataset.column_names)
    return list(next(iter(dataset)).keys())


def _apply_format_transform(dataset: Dataset | IterableDataset, num_proc: int | None) -> Dataset | IterableDataset:
    """A `Dataset.with_transform` dataset shows its rows only through the transform: apply it once, so that the
    preparation sees the transformed columns (a random transform is therefore drawn once, not at every epoch)."""
    if not isinstance(dataset, Dataset) or dataset.format["type"] != "custom":
        return dataset
    transform = dataset.format["format_kwargs"]["transform"]
    raw = dataset.with_format(None)
    keep_columns = dataset.format["output_all_columns"]
    return raw.map(
        transform, batched=True, remove_columns=None if keep_columns else raw.column_names, num_proc=num_proc
    )


def _template_kwargs(example: dict[str, Any]) -> dict[str, Any]:
    """The row's own chat-template arguments (`chat_template_kwargs`, `tools`), as SFT passes them."""
    kwargs = dict(example.get("chat_template_kwargs") or {})
    tools = example.get("tools")
    if tools is not None:
        kwargs["tools"] = json.loads(tools) if isinstance(tools, str) else tools
    return kwargs


class _SampleParts:
    """Reads a sample of any accepted format into a [`_Sample`]."""

    def __init__(self, dataset_text_field: str = "text", formatting_func: Callable[[dict], str] | None = None):
        self.dataset_text_field = dataset_text_field
        self.formatting_func = formatting_func

    def __call__(self, example: dict[str, Any]) -> _Sample:
        if self.formatting_func is not None:
            text = self.formatting_func(example)
            if not isinstance(text, str):
                raise ValueError(
                    f"`formatting_func` must return the text of one sample (a `str`), got {type(text).__name__}."
                )
            return _Sample("", text, is_text=True)
        example = maybe_convert_to_chatml(dict(example))
        template_kwargs = _template_kwargs(example)
        if "prompt" in example:
            return _Sample(example["prompt"], example["completion"], template_kwargs=template_kwargs)
        if "messages" in example:
            messages = example["messages"]
            # Every assistant turn is learnt; the turns after the last one teach nothing and are left out.
            turns = [index for index, message in enumerate(messages) if message["role"] == "assistant"]
            if not turns:
                split_messages(messages)  # raises the error that names the problem
            return _Sample([], messages[: turns[-1] + 1], tuple(turns), template_kwargs)
        text = example[self.dataset_text_field]
        if not isinstance(text, str):
            raise ValueError(
                f"The `{self.dataset_text_field}` column must hold plain text; a conversation goes in a `messages` "
                "column."
            )
        return _Sample("", text, is_text=True)

    def completion_is_empty(self, example: dict[str, Any]) -> bool:
        return not self(example).completion_text.strip()


def _start_text_on_the_same_token(student: dict[str, Any], teacher: dict[str, Any]) -> None:
    """A side whose text starts after a BOS token predicts its first text token; a side without one cannot. Leaves
    that token out of the labels of the side with a BOS when the other side has none, so that both start together."""
    student_start, teacher_start = (_prompt_length(side["labels"]) for side in (student, teacher))
    if (student_start == 0) == (teacher_start == 0):
        return
    side, start = (student, student_start) if student_start else (teacher, teacher_start)
    if start < len(side["labels"]):
        side["labels"][start] = IGNORE_INDEX


def _prompt_length(labels: list[int]) -> int:
    return next((index for index, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))


def compared_labels(example: dict[str, Any]) -> list[int]:
    """The student's labels of the tokens that ULD compares."""
    mask = example.get("completion_mask")
    if mask is None:
        return example["labels"]
    return [label if keep else IGNORE_INDEX for label, keep in zip(example["labels"], mask)]


def _has_predicted_label(labels: list[int]) -> bool:
    # The label at position 0 has no logits before it, so it can never be predicted.
    return any(label != IGNORE_INDEX for label in labels[1:])


def _filter_with_warning(dataset, predicate, reason: str, dataset_name: str, **kwargs):
    size = len(dataset) if isinstance(dataset, Dataset) else None
    dataset = dataset.filter(predicate, **kwargs)
    if size is not None:
        dropped = size - len(dataset)
        if dropped:
            logger.warning(f"Dropped {dropped} of {size} samples of the {dataset_name} dataset: {reason}.")
        if len(dataset) == 0:
            raise ValueError(f"No sample of the {dataset_name} dataset is left for ULD training: {reason}.")
    return dataset


def _validate_prepared(dataset: Dataset | IterableDataset, dataset_name: str, offsets: bool) -> None:
    columns = _column_names(dataset)
    required = PREPARED_COLUMNS + (ALIGNMENT_COLUMNS if offsets else ())
    missing = [column for column in required if column not in columns]
    if missing:
        raise ValueError(
            f"The {dataset_name} dataset is pre-tokenized (it has an `input_ids` column) but lacks the columns "
            f"{missing} that ULD needs. Student token ids alone are refused: the teacher must read the same text in "
            "its own tokenization and its own chat template, which decoding the student's ids cannot give back "
            "(special tokens, the student's template and tokenizer normalisation do not round-trip). Pass the raw "
            "`text`, `prompt`/`completion` or `messages` columns instead, and the trainer tokenizes them for both "
            "models (or prepare the dataset with `prepare_uld_dataset` and the same `alignment`)."
        )


def prepare_uld_dataset(
    dataset: Dataset | IterableDataset,
    tokenizer: PreTrainedTokenizerBase,
    teacher_tokenizer: PreTrainedTokenizerBase,
    max_length: int | None = None,
    num_proc: int | None = None,
    dataset_name: str = "train",
    alignment: str = "positional",
    pair_trailing_textless: bool = True,
    dataset_text_field: str = "text",
    formatting_func: Callable[[dict], str] | None = None,
    completion_only_loss: bool | None = None,
    assistant_only_loss: bool = False,
) -> Dataset | IterableDataset:
    """
    Tokenizes a language-modeling, prompt–completion or `messages` dataset for the student (`input_ids`, `labels`,
    and `completion_mask` where the cross-entropy covers more tokens than ULD) and for the teacher
    (`teacher_input_ids`, `teacher_labels`), and with `alignment="offsets"` the group columns of
    `uld_alignment.align_completion_tokens` (`uld_groups`, `teacher_uld_groups`; both tokenizers must be fast).

    A dataset that already has these columns is returned as it is. Samples with an empty completion, and samples
    left without a predicted completion token on either side after truncation, are dropped with a warning (a
    `ValueError` when none is left).

    Args:
        dataset ([`~datasets.Dataset`] or [`~datasets.IterableDataset`]):
            Dataset with `prompt` and `completion` columns, a `messages` (or `conversations`) column or a text
            column (see the module docstring).
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            The student's tokenizer.
        teacher_tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            The teacher's tokenizer.
        max_length (`int`, *optional*):
            Maximum length of each side's sequence; see [`tokenize_prompt_completion`].
        num_proc (`int`, *optional*):
            Number of processes for `Dataset.map`.
        dataset_name (`str`, *optional*, defaults to `"train"`):
            Name used in messages.
        alignment (`str`, *optional*, defaults to `"positional"`):
            `"offsets"` adds the columns of offsets alignment.
        pair_trailing_textless (`bool`, *optional*, defaults to `True`):
            With offsets alignment, whether the tokens after the completion text (EOS, end of turn) of both sides
            form one last group (see `uld_alignment.align_by_offsets`).
        dataset_text_field (`str`, *optional*, defaults to `"text"`):
            Column holding the text of language-modeling samples.
        formatting_func (`Callable[[dict], str]`, *optional*):
            Maps a sample to its text, making every sample a language-modeling one (as in [`~trl.SFTTrainer`]).
        completion_only_loss (`bool`, *optional*):
            For prompt–completion data, `False` extends the student's cross-entropy to the prompt tokens (ULD stays
            on the completion, the text both models share); `None` and `True` keep it on the completion.
        assistant_only_loss (`bool`, *optional*, defaults to `False`):
            For `messages` data, `True` keeps the student's cross-entropy on the assistant turns; `False` (SFT's
            default) trains it on every token of the conversation. ULD compares the assistant turns either way.
    """
    dataset = _apply_format_transform(dataset, num_proc)
    columns = _column_names(dataset)
    offsets = alignment == "offsets"
    parts = _SampleParts(dataset_text_field, formatting_func)
    if "input_ids" in columns:
        _validate_prepared(dataset, dataset_name, offsets)
        return dataset
    if offsets and not (tokenizer.is_fast and teacher_tokenizer.is_fast):
        raise ValueError(
            "`uld_alignment='offsets'` needs the character offsets that only fast tokenizers report; load both "
            "tokenizers with `use_fast=True` or use `uld_alignment='positional'`."
        )
    has_prompt_completion = "prompt" in columns and "completion" in columns
    has_messages = "messages" in columns or "conversations" in columns
    if "prompt" in columns and not has_prompt_completion and formatting_func is None:
        raise ValueError(
            f"The {dataset_name} dataset has a `prompt` column but no `completion` column: add the completions, or "
            "use a `messages` or `text` column."
        )
    if formatting_func is None and not (has_prompt_completion or has_messages or dataset_text_field in columns):
        raise ValueError(
            f"The {dataset_name} dataset has the columns {columns}, but ULD needs `prompt` and `completion` columns, "
            f"a `messages` column (every assistant turn being learnt), a `{dataset_text_field}` column "
            "(language modeling; see `dataset_text_field`) or a `formatting_func`."
        )
    if assistant_only_loss and (formatting_func is not None or not (has_prompt_completion or has_messages)):
        raise ValueError(
            f"`assistant_only_loss=True` needs conversational data, but the {dataset_name} dataset is language "
            "modeling text, which has no assistant turns. Set `assistant_only_loss=False`."
        )
    map_kwargs = {"num_proc": num_proc} if isinstance(dataset, Dataset) else {}
    dataset = _filter_with_warning(
        dataset,
        lambda example: not parts.completion_is_empty(example),
        "their completion is empty, so there is nothing to distil",
        dataset_name,
        **map_kwargs,
    )

    # Where the student's cross-entropy covers more than the tokens that ULD compares, the rows get a
    # `completion_mask` (1 on the tokens ULD compares) and `labels` cover every token, as SFT trains them.
    if formatting_func is not None or not (has_prompt_completion or has_messages):
        train_every_token = True  # language modeling; the mask leaves out a first token only one side predicts
    elif has_prompt_completion:
        train_every_token = completion_only_loss is False
    else:
        train_every_token = not assistant_only_loss

    def tokenize(example: dict[str, Any]) -> dict[str, list[int]]:
        sample = parts(example)
        student = _tokenize_side(tokenizer, sample, max_length, offsets)
        teacher = _tokenize_side(teacher_tokenizer, sample, max_length, offsets)
        if sample.is_text:
            _start_text_on_the_same_token(student, teacher)
        row = {
            "input_ids": student["input_ids"],
            "labels": student["labels"],
            "teacher_input_ids": teacher["input_ids"],
            "teacher_labels": teacher["labels"],
        }
        if train_every_token:
            row["labels"] = list(student["input_ids"])
            row["completion_mask"] = [int(label != IGNORE_INDEX) for label in student["labels"]]
        if offsets:
            if student["num_segments"] > 1:
                raise ValueError(
                    "`uld_alignment='offsets'` pairs the tokens of one completion, but a conversation of the "
                    f"{dataset_name} dataset has {student['num_segments']} assistant turns. Use "
                    "`uld_alignment='positional'`, or split the conversations into one sample per assistant turn."
                )
            row |= align_completion_tokens(
                sample.completion_text,
                (student["text"], student["offsets"], student["labels"]),
                (teacher["text"], teacher["offsets"], teacher["labels"]),
                pair_trailing_textless=pair_trailing_textless,
            )
        return row

    dataset = dataset.map(tokenize, remove_columns=columns, **map_kwargs)
    return _filter_with_warning(
        dataset,
        lambda example: (
            _has_predicted_label(compared_labels(example)) and _has_predicted_label(example["teacher_labels"])
        ),
        f"no completion token is left to predict on the student's or the teacher's side (max_length={max_length})",
        dataset_name,
        **map_kwargs,
    )


def prepare_uld_dataset_for(
    dataset: Dataset | IterableDataset,
    tokenizer: PreTrainedTokenizerBase,
    teacher_tokenizer: PreTrainedTokenizerBase,
    args: Any,
    dataset_name: str = "train",
    formatting_func: Callable[[dict], str] | None = None,
) -> Dataset | IterableDataset:
    """
    [`prepare_uld_dataset`] with the data settings of a [`ULDConfig`] `args` (`max_length`, `dataset_num_proc`,
    `dataset_text_field`, `completion_only_loss`, `assistant_only_loss`, `uld_alignment`, `uld_skip_*_eos`,
    `shuffle_dataset` with `seed`): the preparation of [`ULDTrainer`], shared with `eurobert-hf distill`, which caches
    the teacher on it.
    """
    if formatting_func is not None and args.completion_only_loss:
        raise ValueError(
            "`formatting_func` turns every sample into one text, which has no completion, so it cannot be combined "
            "with `completion_only_loss=True` (as in SFT). Leave `completion_only_loss` unset, or format the dataset "
            "into `prompt` and `completion` columns instead."
        )
    dataset = prepare_uld_dataset(
        dataset,
        tokenizer,
        teacher_tokenizer,
        max_length=args.max_length,
        num_proc=args.dataset_num_proc,
        dataset_name=dataset_name,
        alignment=args.uld_alignment,
        pair_trailing_textless=not (args.uld_skip_student_eos or args.uld_skip_teacher_eos),
        dataset_text_field=args.dataset_text_field,
        formatting_func=formatting_func,
        completion_only_loss=args.completion_only_loss,
        assistant_only_loss=args.assistant_only_loss,
    )
    return dataset.shuffle(seed=args.seed) if args.shuffle_dataset else dataset


def count_aligned_tokens(
    labels: torch.Tensor,
    teacher_labels: torch.Tensor,
    skip_student_eos: bool,
    skip_teacher_eos: bool,
) -> torch.Tensor:
    """
    Number of completion tokens per sample that positional ULD pairs: the predicted completion tokens of each side
    (labels after the causal shift), minus the skipped last token, the longer side truncated to the shorter.

    Returns:
        `torch.LongTensor` of shape `(batch,)`.
    """
    return aligned_token_counts(
        (labels[:, 1:] != IGNORE_INDEX).sum(dim=1),
        (teacher_labels[:, 1:] != IGNORE_INDEX).sum(dim=1),
        skip_student_eos=skip_student_eos,
        skip_teacher_eos=skip_teacher_eos,
    )


def _pad(sequences: list[list[int]], value: int, length: int) -> torch.Tensor:
    return torch.tensor([sequence + [value] * (length - len(sequence)) for sequence in sequences], dtype=torch.long)


class ULDDataCollator:
    """
    Pads the student and teacher sides of a batch of [`prepare_uld_dataset`] samples (on the right), builds their
    attention masks and batches the offsets-alignment groups when present.

    Args:
        pad_token_id (`int`):
            The student's padding id.
        teacher_pad_token_id (`int`):
            The teacher's padding id (any id works: padded positions are masked out).
        pad_to_multiple_of (`int`, *optional*):
            Pad each side's length to a multiple of this value.
        padding_free (`bool`, *optional*, defaults to `False`):
            Concatenate the student's samples into one row without padding, with `position_ids` restarting at 0 at
            each sample (no `attention_mask`: transformers keeps the samples apart from the `position_ids`), as SFT's
            `padding_free`. The first label of each sample is `-100`, since the logits before it belong to the previous
            sample. The teacher's side stays padded, one sample per row.
    """

    def __init__(
        self,
        pad_token_id: int,
        teacher_pad_token_id: int,
        pad_to_multiple_of: int | None = None,
        padding_free: bool = False,
    ):
        self.pad_token_id = pad_token_id
        self.teacher_pad_token_id = teacher_pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.padding_free = padding_free

    def _length(self, sequences: list[list[int]]) -> int:
        length = max(len(sequence) for sequence in sequences)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return length

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {}
        for prefix, pad_token_id in (("", self.pad_token_id), ("teacher_", self.teacher_pad_token_id)):
            input_ids = [example[f"{prefix}input_ids"] for example in examples]
            length = self._length(input_ids)
            batch[f"{prefix}input_ids"] = _pad(input_ids, pad_token_id, length)
            batch[f"{prefix}attention_mask"] = _pad([[1] * len(ids) for ids in input_ids], 0, length)
            batch[f"{prefix}labels"] = _pad([example[f"{prefix}labels"] for example in examples], IGNORE_INDEX, length)
        if "completion_mask" in examples[0]:
            masks = [example["completion_mask"] for example in examples]
            batch["completion_mask"] = _pad(masks, 0, batch["input_ids"].shape[1])
        if self.padding_free:
            del batch["attention_mask"]
            batch.update(self._concatenated_student(examples))
        for column in ALIGNMENT_COLUMNS:
            if column in examples[0]:
                batch[column] = pad_alignment_groups([example[column] for example in examples])
        return batch

    @staticmethod
    def _concatenated_student(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        def concatenated(column: str, first: int | None = None) -> torch.Tensor:
            rows = [example[column] if first is None else [first, *example[column][1:]] for example in examples]
            return torch.tensor([[value for row in rows for value in row]], dtype=torch.long)

        student = {
            "input_ids": concatenated("input_ids"),
            "labels": concatenated("labels", first=IGNORE_INDEX),
            "position_ids": torch.tensor([[i for example in examples for i in range(len(example["input_ids"]))]]),
        }
        if "completion_mask" in examples[0]:
            student["completion_mask"] = concatenated("completion_mask", first=0)
        return student


def unpack_padding_free(batch: dict[str, Any]) -> tuple[dict[str, Any], torch.Tensor | None, torch.Tensor | None]:
    """
    The student's side of a padding-free batch (see [`ULDDataCollator`]) as padded rows, one sample each: returns the
    batch with `labels`, `completion_mask` and `attention_mask` of shape `(samples, longest sample)`, and the index
    and validity mask that map the concatenated positions to those rows (None, None for a padded batch).
    """
    if "position_ids" not in batch or "attention_mask" in batch:
        return batch, None, None
    position_ids = batch["position_ids"][0]
    starts = (position_ids == 0).nonzero().flatten()
    lengths = torch.diff(starts, append=starts.new_tensor([position_ids.numel()]))
    offsets = torch.arange(int(lengths.max()), device=position_ids.device)
    valid = offsets[None, :] < lengths[:, None]
    index = (starts[:, None] + offsets[None, :]).clamp(max=position_ids.numel() - 1)
    unpacked = {key: value for key, value in batch.items() if key != "position_ids"}
    unpacked["attention_mask"] = valid.long()
    unpacked["labels"] = batch["labels"][0][index].masked_fill(~valid, IGNORE_INDEX)
    if "completion_mask" in batch:
        unpacked["completion_mask"] = batch["completion_mask"][0][index] * valid
    return unpacked, index, valid


__all__ = [
    "ULDDataCollator",
    "count_aligned_tokens",
    "prepare_uld_dataset",
    "prepare_uld_dataset_for",
    "split_messages",
    "tokenize_prompt_completion",
    "unpack_padding_free",
]
