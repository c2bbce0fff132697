"""`eurobert-hf pretrain`: continued masked-language-model pre-training of EuroBERT, the way the EuroBERT authors train.

- Masking with the mask token only (no random or kept tokens), `--mlm_probability` of the non-special tokens (0.3 by
  default, as the authors' framework; the paper lowers it for the final annealing phase).
- Packed batches without padding: the documents of a batch are concatenated into one row whose `position_ids` restart
  at 0 for each document, so that EuroBERT's padding-free path never lets a document attend to another.
- A warmup-stable-decay learning-rate schedule (`--decay_ratio` of the steps for the decay) at lr 1e-4 by default.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import (
    AutoModelForMaskedLM,
    DataCollatorWithFlattening,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)

from ..hub import eval_results_from_metrics, render_eurobert_model_card, training_hyperparameters
from .common import (
    CommandError,
    DataArguments,
    check_output_dir,
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
from .validation import check_rows, check_vocabulary, text_value

WSD_SCHEDULER = "warmup_stable_decay"
IGNORE_INDEX = -100
# The authors' framework: lr 1e-4 with a warmup-stable-decay schedule.
DEFAULTS = {"lr_scheduler_type": WSD_SCHEDULER, "learning_rate": 1e-4}


@dataclass
class PretrainArguments:
    """The checkpoint, the text column and the masking and schedule settings."""

    model_name_or_path: str = field(metadata={"help": "A EuroBERT checkpoint: local folder or Hub name."})
    text_column: str = field(default="text", metadata={"help": "The column holding the documents."})
    max_length: int = field(
        default=2048,
        metadata={
            "help": "Documents longer than this many tokens are split into several sequences (at most the model's "
            "`max_position_embeddings`; a packed batch of several sequences may be longer)."
        },
    )
    mlm_probability: float = field(
        default=0.3, metadata={"help": "Fraction of the non-special tokens replaced by the mask token."}
    )
    decay_ratio: float = field(
        default=0.1,
        metadata={
            "help": "Warmup-stable-decay schedule: fraction of the training steps spent decaying the learning rate "
            "(used unless `--lr_scheduler_kwargs` sets `num_decay_steps`)."
        },
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow the checkpoint's own model code."})


class MaskOnlyPackingCollator:
    """
    Packs a batch of tokenized documents into one row without padding and masks it for MLM with the mask token only.

    The packing is `transformers.DataCollatorWithFlattening`: `input_ids` of shape `(1, total_length)` and
    `position_ids` restarting at 0 for each document, which EuroBERT turns into per-document attention. Each
    non-special token is masked with probability `mlm_probability` and always replaced by the mask token (no random
    or unchanged tokens, unlike BERT's 80/10/10); the labels hold the original ids at masked positions and -100
    elsewhere. A batch in which no token was drawn gets one masked token, so that the loss is never undefined.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            Its `mask_token_id` replaces the masked tokens; its special tokens are never masked.
        mlm_probability (`float`, *optional*, defaults to `0.3`):
            Masking probability of each non-special token.
        generator (`torch.Generator`, *optional*):
            Source of randomness; defaults to torch's global generator (seeded by the Trainer).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        mlm_probability: float = 0.3,
        generator: torch.Generator | None = None,
    ):
        if tokenizer.mask_token_id is None:
            raise ValueError("The tokenizer has no mask token, which masked-language-model training needs.")
        if not 0 < mlm_probability < 1:
            raise ValueError(f"`mlm_probability` must be in (0, 1), got {mlm_probability}.")
        self.tokenizer = tokenizer
        self.mlm_probability = mlm_probability
        self.generator = generator
        self._flatten = DataCollatorWithFlattening(return_position_ids=True)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        documents = [list(feature["input_ids"]) for feature in features]
        packed = self._flatten([{"input_ids": ids} for ids in documents], return_tensors="pt")
        input_ids = packed["input_ids"]
        special = torch.tensor(
            [
                flag
                for ids in documents
                for flag in self.tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
            ],
            dtype=torch.bool,
        ).view_as(input_ids)
        probabilities = torch.full(input_ids.shape, self.mlm_probability).masked_fill(special, 0.0)
        masked = torch.bernoulli(probabilities, generator=self.generator).bool()
        if not masked.any():
            candidates = (~special).view(-1).nonzero().view(-1)
            if len(candidates) == 0:
                raise ValueError("A batch holds special tokens only; there is nothing to mask.")
            pick = torch.randint(len(candidates), (1,), generator=self.generator)
            masked.view(-1)[candidates[pick]] = True
        return {
            "input_ids": input_ids.masked_fill(masked, self.tokenizer.mask_token_id),
            "labels": input_ids.masked_fill(~masked, IGNORE_INDEX),
            "position_ids": packed["position_ids"],
        }


def _without_empty_documents(dataset: Dataset | None, column: str, kind: str) -> Dataset | None:
    """Drops documents with no text (as blank lines between paragraphs of a corpus), saying how many."""
    if dataset is None:
        return None
    kept = dataset.filter(lambda batch: [bool(text.strip()) for text in batch[column]], batched=True)
    if len(kept) < len(dataset):
        note(f"{len(dataset) - len(kept)} empty {kind} documents are left out.")
    if len(kept) == 0:
        raise CommandError(f"Every {kind} document is empty; check `--text_column`.")
    return kept


def _tokenize(dataset: Dataset | None, tokenizer: PreTrainedTokenizerBase, column: str, max_length: int, kind: str):
    """Sequences of at most `max_length` tokens; those with special tokens only (text the tokenizer only knows as
    unknown tokens) have nothing to mask and are left out, saying how many."""
    if dataset is None:
        return None

    # As `MaskOnlyPackingCollator`: every special token, the unknown token included, is never masked.
    special = set(tokenizer.all_special_ids)

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(batch[column], truncation=True, max_length=max_length, return_overflowing_tokens=True)
        maskable = [any(token not in special for token in ids) for ids in encoded["input_ids"]]
        return {"input_ids": encoded["input_ids"], "maskable": maskable}

    tokenized = dataset.map(tokenize, batched=True, remove_columns=dataset.column_names)
    kept = tokenized.filter(lambda batch: batch["maskable"], batched=True).remove_columns("maskable")
    if len(kept) == 0:
        raise CommandError(
            f"No {kind} document has a token to mask: the tokenizer reads them as special or unknown tokens only. "
            "Check `--text_column` and that the tokenizer is the model's own."
        )
    if len(kept) < len(tokenized):
        note(f"{len(tokenized) - len(kept)} {kind} sequences hold special or unknown tokens only and are left out.")
    return kept


def _total_steps(training_args: TrainingArguments, num_samples: int) -> int:
    if training_args.max_steps > 0:
        return training_args.max_steps
    batch = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    return math.ceil(num_samples / (batch * training_args.world_size)) * math.ceil(training_args.num_train_epochs)


def _set_decay_steps(training_args: TrainingArguments, decay_ratio: float, num_samples: int) -> None:
    if training_args.lr_scheduler_type != WSD_SCHEDULER:
        return
    kwargs = dict(training_args.lr_scheduler_kwargs or {})
    if "num_decay_steps" not in kwargs:
        if not 0 <= decay_ratio <= 1:
            raise CommandError(f"`--decay_ratio` must be in [0, 1], got {decay_ratio}.")
        kwargs["num_decay_steps"] = round(decay_ratio * _total_steps(training_args, num_samples))
    training_args.lr_scheduler_kwargs = kwargs


def run(argv: Sequence[str]) -> int:
    """Runs `eurobert-hf pretrain` with `argv`; returns the exit status."""
    args, data, training_args, output_args = parse_arguments(
        (PretrainArguments, DataArguments, TrainingArguments), argv, "eurobert-hf pretrain", __doc__, DEFAULTS
    )
    check_output_dir(training_args, output_args)
    resume = resolve_resume(training_args)
    config = load_model_config(args.model_name_or_path, "model", args.trust_remote_code)
    if config.model_type != "eurobert":
        raise CommandError(
            f"`pretrain` trains EuroBERT (its padding-free packed path), but {args.model_name_or_path!r} is a "
            f"{config.model_type!r} model. Pass a EuroBERT checkpoint."
        )
    if args.max_length > config.max_position_embeddings:
        note(
            f"`--max_length {args.max_length}` is more than the model's max_position_embeddings "
            f"({config.max_position_embeddings}): documents are split every {config.max_position_embeddings} tokens "
            "(a packed batch of several documents may still be longer)."
        )
        args.max_length = config.max_position_embeddings
    tokenizer = load_tokenizer(args.model_name_or_path, "model", args.trust_remote_code)
    if tokenizer.mask_token_id is None:
        raise CommandError(
            f"The tokenizer of {args.model_name_or_path!r} has no mask token, which masked-language-model "
            "pre-training needs. EuroBERT's tokenizer has one (`<|mask|>`); check that you pass its own tokenizer."
        )
    try:
        collator = MaskOnlyPackingCollator(tokenizer, args.mlm_probability)
    except ValueError as error:
        raise CommandError(str(error)) from None
    check_vocabulary(tokenizer, config, "model", args.model_name_or_path)

    def check(dataset: Dataset, source: str) -> None:
        require_columns([dataset], [args.text_column], f"pre-training (in {source})", "Name it with `--text_column`.")
        check_rows(dataset, source, {args.text_column: text_value})

    train_data, eval_data = load_splits(data, training_args.seed, check)
    train_data = _without_empty_documents(train_data, args.text_column, "training")
    eval_data = _without_empty_documents(eval_data, args.text_column, "evaluation")
    train_dataset = _tokenize(train_data, tokenizer, args.text_column, args.max_length, "training")
    eval_dataset = _tokenize(eval_data, tokenizer, args.text_column, args.max_length, "evaluation")
    _set_decay_steps(training_args, args.decay_ratio, len(train_dataset))
    if eval_dataset is None and training_args.eval_strategy != "no":
        note("no evaluation data (pass `--eval_file`, `--eval_split` or `--eval_split_size`): evaluation is off.")
        training_args.eval_strategy = "no"

    model = AutoModelForMaskedLM.from_pretrained(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=tokenizer,
    )
    result = train(trainer, resume, "pretrain", argv)
    metrics = trainer.evaluate() if eval_dataset is not None else {}
    if "eval_loss" in metrics:
        metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50.0))

    base_model = None if Path(args.model_name_or_path).exists() else args.model_name_or_path
    card = render_eurobert_model_card(
        hub_model_id(training_args),
        task="fill-mask",
        model=trainer.model,
        base_model=base_model,
        datasets=data.dataset_name if data.dataset_name and not Path(data.dataset_name).exists() else None,
        eval_results=eval_results_from_metrics(
            metrics, task_type="fill-mask", dataset_name=data.dataset_name or Path(data.train_file).name
        ),
        hyperparameters={**training_hyperparameters(training_args), "mlm_probability": args.mlm_probability},
    )
    output_dir = write_output_folder(trainer.model, training_args.output_dir, tokenizer=tokenizer, model_card=card)
    rows = [
        ("sequences", len(train_dataset)),
        ("tokens per epoch", sum(len(ids) for ids in train_dataset["input_ids"])),
        ("mlm probability", args.mlm_probability),
        ("lr schedule", str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type))),
        ("steps", result.global_step),
        ("train loss", result.training_loss),
        *metric_rows(metrics, "eval_"),
    ]
    return finish(
        "eurobert-hf pretrain (MLM, mask token only, packed)",
        rows,
        output_dir,
        training_args,
        lambda: push_output(trainer.model, training_args, tokenizer=tokenizer, model_card=card),
    )
