"""`ULDTrainer`: TRL's `SFTTrainer` with Universal Logit Distillation from a teacher with another tokenizer."""

import inspect
import itertools
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset, IterableDataset
from peft import PeftModel
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollator,
    EvalPrediction,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProcessorMixin,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.utils import logging
from trl import SFTTrainer
from trl.models import prepare_deepspeed, prepare_fsdp

from ..hub.cards import ULD_CITATION, render_uld_model_card, training_hyperparameters
from ..hub.remote_code import prune_auto_map
from .teacher_cache import (
    CACHE_COLUMNS,
    TeacherCacheCollator,
    TeacherCacheRequirements,
    check_teacher_cache,
    teacher_probs_from_batch,
)
from .uld_alignment import ALIGNMENT_COLUMNS, count_aligned_groups, offsets_uld_loss
from .uld_config import ULDConfig
from .uld_data import (
    IGNORE_INDEX,
    PREPARED_COLUMNS,
    ULDDataCollator,
    count_aligned_tokens,
    prepare_uld_dataset_for,
    unpack_padding_free,
)
from .uld_losses import aligned_token_counts, uld_loss

logger = logging.get_logger(__name__)


def _tokenizer_of(processing_class: PreTrainedTokenizerBase | ProcessorMixin) -> PreTrainedTokenizerBase:
    return processing_class.tokenizer if isinstance(processing_class, ProcessorMixin) else processing_class


def _pad_token_id(processing_class: PreTrainedTokenizerBase | ProcessorMixin | None) -> int:
    # Padded positions are masked out of attention and loss, so any id in the vocabulary pads.
    if processing_class is not None:
        tokenizer = _tokenizer_of(processing_class)
        for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
            if token_id is not None:
                return token_id
    return 0


def _check_vocabulary(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, who: str) -> None:
    vocab_size = model.config.get_text_config().vocab_size
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"The {who} tokenizer has {len(tokenizer)} tokens but the {who} model's vocabulary has {vocab_size}: "
            f"they do not belong together. Pass the {who}'s own tokenizer."
        )


# What `compute_loss` adds up per micro-batch (over all processes) for the logged means: the CE and ULD sums and the
# token counts that divide them, the correctly predicted tokens, the entropy sum, the MoE aux loss (summed over
# micro-batches), the micro-batches and the input tokens (attention mask).
_METRIC_SUMS = (
    "ce_sum",
    "uld_sum",
    "ce_count",
    "uld_count",
    "correct",
    "entropy_sum",
    "aux_sum",
    "micro_batches",
    "num_tokens",
    # Alignment health: answer tokens of each side, those ULD pairs on each side, the summed per-sample difference of
    # answer lengths, the samples, and with a teacher cache the kept top-k mass summed over the teacher's answer rows.
    "student_answer_tokens",
    "teacher_answer_tokens",
    "student_aligned_tokens",
    "teacher_aligned_tokens",
    "length_mismatch_sum",
    "samples",
    "topk_mass_sum",
    "topk_mass_rows",
)


def _tokens_in_common_groups(student_groups: torch.Tensor, teacher_groups: torch.Tensor) -> tuple[int, int]:
    """Offsets alignment: the answer tokens of each side whose group has tokens on the other side too."""
    size = int(max(student_groups.max(), teacher_groups.max(), 0)) + 2
    present = []
    for groups in (student_groups, teacher_groups):
        one_hot = torch.zeros(groups.shape[0], size, dtype=torch.bool)
        one_hot.scatter_(1, (groups + 1).clamp(min=0), True)
        one_hot[:, 0] = False  # column 0 collects the tokens of no group (and padding)
        present.append(one_hot)
    common = present[0] & present[1]
    return tuple(int(common.gather(1, (groups + 1).clamp(min=0)).sum()) for groups in (student_groups, teacher_groups))


def _supported_sft_arguments(**arguments: Any) -> dict[str, Any]:
    """The given `SFTTrainer` arguments that the installed TRL accepts; one it lacks may only be left unset."""
    accepted = inspect.signature(SFTTrainer.__init__).parameters
    for name, value in arguments.items():
        if name not in accepted and value is not None:
            raise TypeError(f"`{name}` needs a TRL whose `SFTTrainer` accepts it; the installed TRL's does not.")
    return {name: value for name, value in arguments.items() if name in accepted}


def load_teacher_model(name_or_path: str, args: ULDConfig) -> PreTrainedModel:
    """
    Loads the teacher as [`ULDTrainer`] (and `eurobert-hf distill`) do: with `args.teacher_model_init_kwargs`, else
    with the student's `args.model_init_kwargs` minus its `revision` (which names a version of the student's
    repository); `dtype` defaults to `float32` and `trust_remote_code` to `args.trust_remote_code`.
    """
    if args.teacher_model_init_kwargs is not None:
        init_kwargs = dict(args.teacher_model_init_kwargs)
    else:
        init_kwargs = {key: value for key, value in (args.model_init_kwargs or {}).items() if key != "revision"}
    dtype = init_kwargs.pop("dtype", init_kwargs.pop("torch_dtype", None)) or torch.float32
    init_kwargs["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
    init_kwargs.setdefault("trust_remote_code", args.trust_remote_code)
    return AutoModelForCausalLM.from_pretrained(name_or_path, **init_kwargs)


# transformers >= 5.19 reads `loss_is_scaled_for_ga`, and TRL's trainers translate it for older transformers.
_HONOURS_LOSS_IS_SCALED_FOR_GA = any("loss_is_scaled_for_ga" in vars(base) for base in SFTTrainer.__mro__)


class ULDTrainer(SFTTrainer):
    """
    Trainer for Universal Logit Distillation (ULD) of a causal language model from a teacher that may use another
    tokenizer, as in [Towards Cross-Tokenizer Distillation: the Universal Logit Distillation Loss for
    LLMs](https://huggingface.co/papers/2402.12030).

    A drop-in replacement of [`~trl.SFTTrainer`]: the same arguments in the same order, plus the teacher as the
    keyword arguments `teacher_model` and `teacher_processing_class` (or `args.teacher_model_name_or_path`). Each sample
    is tokenized for both models, each rendering the prompt its own way (see `eurobert_hf.trainers.uld_data`), and the
    loss is `uld_crossentropy_weight · CE + uld_distillation_weight · ULD`, normalised by token counts of the whole
    optimizer step (see [`ULDConfig`]). As in SFT, `label_smoothing_factor` applies to the cross-entropy and an MoE
    student's router load-balancing loss is added (`router_aux_loss_coef`). Train and eval logs report both terms as
    `ce_loss` and `uld_loss`, next to SFT's `mean_token_accuracy`, `entropy` and `num_tokens` (and `aux_loss`), so
    `metric_for_best_model="eval_mean_token_accuracy"` works. The alignment's health is logged too:
    `aligned_share_student` and `aligned_share_teacher` (share of each side's answer tokens that ULD pairs),
    `length_mismatch` (mean per-sample difference of the answers' token counts) and, with a top-k teacher cache,
    `teacher_topk_mass` (mean teacher probability mass kept). PEFT students train with any adapter; the virtual tokens
    of prompt tuning and p-tuning are skipped by the masks.

    Args:
        model (`str` or [`~transformers.PreTrainedModel`] or [`~peft.PeftModel`]):
            The student, as in [`~trl.SFTTrainer`] (a name or path is loaded with `args.model_init_kwargs` and
            `quantization_config`).
        args ([`ULDConfig`] or [`~transformers.TrainingArguments`], *optional*):
            Configuration. Any other [`~transformers.TrainingArguments`] (an [`~trl.SFTConfig`] included) is converted
            with [`ULDConfig.from_training_arguments`], the ULD fields at their defaults. Defaults to
            `ULDConfig("<model name>-ULD")`.
        data_collator ([`~transformers.DataCollator`], *optional*):
            Defaults to [`~eurobert_hf.trainers.uld_data.ULDDataCollator`].
        train_dataset ([`~datasets.Dataset`] or [`~datasets.IterableDataset`]):
            Language-modeling (`text`, or `args.dataset_text_field`), prompt–completion (plain or conversational) or
            `messages` dataset; see `eurobert_hf.trainers.uld_data`.
        eval_dataset ([`~datasets.Dataset`], [`~datasets.IterableDataset`] or `dict`, *optional*):
            Same formats as `train_dataset`.
        processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            The student's tokenizer. Defaults to the student's own. Without a padding token, the EOS token pads.
        compute_loss_func (`Callable`, *optional*):
            Replaces the cross-entropy term: called as `compute_loss_func(outputs, labels, num_items_in_batch=...)` with
            the student's outputs, its (unshifted) labels and, in training, the number of predicted completion tokens
            of the whole optimizer step; its result is weighted by `uld_crossentropy_weight` and the ULD term is added.
            The logged `ce_loss` stays the cross-entropy.
        compute_metrics, callbacks, optimizers, optimizer_cls_and_kwargs, preprocess_logits_for_metrics:
            As in [`~trl.SFTTrainer`].
        quantization_config ([`~transformers.BitsAndBytesConfig`], *optional*):
            Quantization of the student when it is loaded from a name or path, as in [`~trl.SFTTrainer`]. The teacher
            is quantized through `args.teacher_model_init_kwargs` instead.
        peft_config ([`~peft.PeftConfig`], *optional*):
            As in [`~trl.SFTTrainer`].
        formatting_func (`Callable`, *optional*):
            Maps a sample to the text both models read, which turns the dataset into a language-modeling one, as in
            [`~trl.SFTTrainer`].
        teacher_model (`str` or [`~transformers.PreTrainedModel`], *optional*, keyword only):
            The teacher, a causal language model or its name or path (loaded with `args.teacher_model_init_kwargs`,
            else `args.model_init_kwargs`). Defaults to `args.teacher_model_name_or_path`. It runs in eval mode without
            gradients. Without either, the datasets must carry a teacher cache
            (`eurobert_hf.trainers.teacher_cache.cache_teacher_probs` over a `prepare_uld_dataset` output) and no
            teacher is held in memory.
        teacher_processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*, keyword only):
            The teacher's tokenizer. Defaults to `args.teacher_tokenizer_name_or_path`, else the teacher's own name.
            It may lack a padding token.
    """

    _tag_names = ["trl", "uld", "distillation"]
    # `compute_loss` normalises by the token counts of the whole optimizer step (see `_get_num_items_in_batch`), so the
    # Trainer must not divide the loss by the number of accumulation steps again.
    loss_is_scaled_for_ga = True
    _name = "ULD"
    _paper = {
        "title": "Towards Cross-Tokenizer Distillation: the Universal Logit Distillation Loss for LLMs",
        "id": "2402.12030",
        "citation": ULD_CITATION,
    }

    def __init__(
        self,
        model: "str | PreTrainedModel",
        args: ULDConfig | TrainingArguments | None = None,
        data_collator: DataCollator | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset: Dataset | IterableDataset | dict[str, Dataset | IterableDataset] | None = None,
        processing_class: PreTrainedTokenizerBase | ProcessorMixin | None = None,
        compute_loss_func: Callable | None = None,
        compute_metrics: Callable[[EvalPrediction], dict] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        optimizer_cls_and_kwargs: tuple[type[torch.optim.Optimizer], dict[str, Any]] | None = None,
        preprocess_logits_for_metrics: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        quantization_config: "Any | None" = None,
        peft_config: "Any | None" = None,
        formatting_func: Callable[[dict], str] | None = None,
        *,
        teacher_model: "str | PreTrainedModel | None" = None,
        teacher_processing_class: PreTrainedTokenizerBase | ProcessorMixin | None = None,
    ):
        model_name = model if isinstance(model, str) else model.name_or_path
        if args is None:
            args = ULDConfig(f"{os.path.basename(model_name.rstrip('/')) or 'model'}-ULD")
        elif isinstance(args, TrainingArguments) and not isinstance(args, ULDConfig):
            args = ULDConfig.from_training_arguments(args)
        elif not isinstance(args, TrainingArguments):
            raise TypeError(
                f"`args` (the second positional argument, as in `SFTTrainer`) must be a `ULDConfig` or "
                f"`TrainingArguments`, got `{type(args).__name__}`. Pass the teacher as the keyword argument "
                "`teacher_model=`."
            )
        if train_dataset is None:
            raise ValueError("`train_dataset` is required.")

        teacher_model = teacher_model if teacher_model is not None else args.teacher_model_name_or_path
        teacher_name = teacher_model if isinstance(teacher_model, str) else getattr(teacher_model, "name_or_path", "")
        # Without a teacher, every dataset must carry a teacher cache (checked when the datasets are prepared).
        if teacher_model is not None:
            if isinstance(teacher_model, str):
                teacher_model = load_teacher_model(teacher_model, args)
            elif args.teacher_model_init_kwargs:
                logger.warning("`teacher_model_init_kwargs` is ignored: the teacher is already instantiated.")
            if teacher_processing_class is None:
                if not (args.teacher_tokenizer_name_or_path or teacher_name):
                    raise ValueError(
                        "The teacher was built in memory, so its tokenizer is unknown: pass `teacher_processing_class` "
                        "or set `teacher_tokenizer_name_or_path`."
                    )
                teacher_processing_class = AutoTokenizer.from_pretrained(
                    args.teacher_tokenizer_name_or_path or teacher_name, trust_remote_code=args.trust_remote_code
                )
            _check_vocabulary(teacher_model, _tokenizer_of(teacher_processing_class), "teacher")

        if processing_class is None:
            if not model_name:
                raise ValueError(
                    "The student was built in memory, so its tokenizer is unknown: pass `processing_class`."
                )
            processing_class = AutoTokenizer.from_pretrained(model_name, trust_remote_code=args.trust_remote_code)
        tokenizer = _tokenizer_of(processing_class)
        if args.pad_token is not None:
            if args.pad_token not in tokenizer.get_vocab():
                raise ValueError(
                    f"`pad_token={args.pad_token!r}` is not in the student tokenizer's vocabulary; pass one of its "
                    "tokens."
                )
            tokenizer.pad_token = args.pad_token
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(
                    "The student's tokenizer has neither a padding token nor an EOS token. Set `tokenizer.pad_token` "
                    "before passing it as `processing_class`."
                )
            tokenizer.pad_token = tokenizer.eos_token
        if data_collator is None:
            data_collator = ULDDataCollator(
                pad_token_id=tokenizer.pad_token_id,
                teacher_pad_token_id=_pad_token_id(teacher_processing_class),
                pad_to_multiple_of=args.pad_to_multiple_of,
                padding_free=args.padding_free,
            )
            if teacher_model is None:
                requirements = TeacherCacheRequirements.for_training(args, tokenizer, teacher_processing_class)
                data_collator = TeacherCacheCollator(data_collator, requirements)

        # SFT handles `assistant_only_loss` in its own dataset preparation (it swaps in a student chat template with
        # generation markers) and `padding_free` with its own collator, both of which ULD replaces: the flags are read
        # by `prepare_uld_dataset` and `ULDDataCollator` instead.
        assistant_only_loss, args.assistant_only_loss = args.assistant_only_loss, False
        padding_free, args.padding_free = args.padding_free, False
        try:
            super().__init__(
                model=model,
                args=args,
                data_collator=data_collator,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                compute_metrics=compute_metrics,
                callbacks=callbacks,
                optimizers=optimizers,
                preprocess_logits_for_metrics=preprocess_logits_for_metrics,
                peft_config=peft_config,
                **_supported_sft_arguments(
                    compute_loss_func=compute_loss_func,
                    optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
                    quantization_config=quantization_config,
                ),
            )
        finally:
            args.assistant_only_loss, args.padding_free = assistant_only_loss, padding_free
        _check_vocabulary(self.model, _tokenizer_of(self.processing_class), "student")
        # Checkpoints, `save_model` and Hub pushes must name no code outside their own folder.
        prune_auto_map(self.model, self.processing_class)
        if (
            args.padding_free
            and isinstance(self.model, PeftModel)
            and self.model.active_peft_config.is_prompt_learning
        ):
            raise ValueError(
                "`padding_free=True` cannot be combined with a prompt-learning adapter (prompt tuning, p-tuning, prefix "
                "tuning): its virtual tokens belong to each sample, not to a row of concatenated samples. Set "
                "`padding_free=False`."
            )
        # Kept apart: on older transformers TRL replaces `self.compute_loss_func` with a marker that switches off the
        # Trainer's own scaling (see `loss_is_scaled_for_ga`).
        self._ce_loss_func = compute_loss_func

        self.teacher_processing_class = teacher_processing_class
        self._uld_formatting_func = formatting_func
        self.teacher_name_or_path = teacher_name
        self.teacher_model = None if teacher_model is None else self._prepare_teacher(teacher_model)
        self.train_dataset = self._prepare_uld_dataset(self.train_dataset, "train")
        if isinstance(self.eval_dataset, dict):
            self.eval_dataset = {
                name: self._prepare_uld_dataset(data, name) for name, data in self.eval_dataset.items()
            }
        elif self.eval_dataset is not None:
            self.eval_dataset = self._prepare_uld_dataset(self.eval_dataset, "eval")

        if not _HONOURS_LOSS_IS_SCALED_FOR_GA:
            # Older transformers and TRL read `loss_is_scaled_for_ga` nowhere: this flag is what stops the Trainer
            # from dividing the loss by the accumulation steps there.
            self.model_accepts_loss_kwargs = True
        self._num_aligned_in_batch = None
        self._uld_totals = {mode: torch.zeros(len(_METRIC_SUMS), dtype=torch.float64) for mode in ("train", "eval")}
        self._num_train_tokens = 0

    def _prepare_teacher(self, teacher_model: PreTrainedModel) -> torch.nn.Module:
        teacher_model.eval()
        teacher_model.requires_grad_(False)
        if self.is_deepspeed_enabled:
            return prepare_deepspeed(teacher_model, self.accelerator)
        if self.is_fsdp_enabled and self.accelerator.is_fsdp2:
            # Sharded the way accelerate shards the student: one FSDP unit per layer of the wrap policy, so that a
            # forward gathers one layer at a time, and under `cpu_ram_efficient_loading` the weights broadcast from
            # the main process (transformers < 5 loads them there only: the other processes hold uninitialised ones).
            # Imported here: accelerate >= 1.6 only, the first with FSDP2.
            from accelerate.utils import fsdp2_prepare_model

            teacher_model = fsdp2_prepare_model(self.accelerator, teacher_model)
            # accelerate keeps the embeddings and the final norm gathered from the forward to the backward, which a
            # teacher never runs: without this, they would stay whole on every process after the first forward.
            teacher_model.set_reshard_after_forward(True)
            return teacher_model.eval()
        if self.is_fsdp_enabled:
            return prepare_fsdp(teacher_model, self.accelerator)
        return self.accelerator.prepare_model(teacher_model, evaluation_mode=True)

    def _prepare_uld_dataset(self, dataset: Dataset | IterableDataset, name: str) -> Dataset | IterableDataset:
        if self.teacher_model is None:
            requirements = TeacherCacheRequirements.for_training(
                self.args, self.processing_class, self.teacher_processing_class
            )
            check_teacher_cache(dataset, requirements, dataset_name=name)
        with self.args.main_process_first(desc=f"ULD tokenization of the {name} dataset"):
            return prepare_uld_dataset_for(
                dataset,
                _tokenizer_of(self.processing_class),
                self.teacher_processing_class and _tokenizer_of(self.teacher_processing_class),
                self.args,
                dataset_name=name,
                formatting_func=self._uld_formatting_func,
            )

    def _set_signature_columns_if_needed(self):
        # The Trainer drops dataset columns that the model's forward does not take; the teacher's are needed too.
        if self._signature_columns is None:
            self._signature_columns = [
                *PREPARED_COLUMNS,
                "completion_mask",
                *ALIGNMENT_COLUMNS,
                # The cache collator reads the cached values and checks each row's settings, counts and hashes.
                *CACHE_COLUMNS,
            ]

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        if isinstance(eval_dataset, dict):
            eval_dataset = {name: self._prepare_uld_dataset(data, name) for name, data in eval_dataset.items()}
        elif eval_dataset is not None and not isinstance(eval_dataset, str):
            eval_dataset = self._prepare_uld_dataset(eval_dataset, metric_key_prefix)
        return super().evaluate(
            eval_dataset=eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
        )

    @staticmethod
    def _compared_labels(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The student's labels of the tokens ULD compares (the cross-entropy may cover more; see `uld_data`)."""
        if "completion_mask" not in batch:
            return batch["labels"]
        return batch["labels"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)

    def _token_counts(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokens the cross-entropy scores and terms the ULD sum adds up (aligned tokens or groups)."""
        batch, _, _ = unpack_padding_free(batch)
        labels = batch["labels"]
        if self.args.uld_alignment == "offsets":
            num_aligned = count_aligned_groups(batch["uld_groups"], batch["teacher_uld_groups"]).sum()
        else:
            num_aligned = count_aligned_tokens(
                self._compared_labels(batch),
                batch["teacher_labels"],
                self.args.uld_skip_student_eos,
                self.args.uld_skip_teacher_eos,
            ).sum()
        return torch.stack([(labels[:, 1:] != IGNORE_INDEX).sum().cpu(), num_aligned.cpu()])

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor | None:
        """
        transformers' hook that counts the loss's items over the micro-batches of one optimizer step (and over all
        processes with `average_tokens_across_devices`): here the predicted tokens of the cross-entropy (returned,
        the Trainer passes them to `compute_loss` as `num_items_in_batch`) and the terms of the ULD sum (kept for
        `compute_loss`).
        """
        if not batch_samples:
            return None
        counts = torch.zeros(2, dtype=torch.long, device=device)
        for batch in batch_samples:
            counts += self._token_counts(batch).to(device)
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            counts = self.accelerator.gather(counts).view(-1, 2).sum(dim=0)
        self._num_aligned_in_batch = counts[1]
        return counts[0]

    if not hasattr(Trainer, "_get_num_items_in_batch"):
        # Older transformers count inside `get_batch_samples`, without the hook: collect the micro-batches there and
        # count them with it.
        def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device) -> tuple[list, Any]:
            batch_samples = list(itertools.islice(epoch_iterator, num_batches))
            return batch_samples, self._get_num_items_in_batch(batch_samples, device)

    def _uld_sum(self, student_logits: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The ULD term summed over the aligned tokens (or groups) of the batch."""
        if self.teacher_model is None:
            # The loss compares at most the student's vocabulary (or uld_top_k) of the sorted values.
            width = self.args.uld_top_k or student_logits.shape[-1]
            teacher, teacher_labels = teacher_probs_from_batch(inputs, width=width), None
        else:
            with torch.no_grad():
                teacher = self.teacher_model(
                    input_ids=inputs["teacher_input_ids"],
                    attention_mask=inputs["teacher_attention_mask"],
                    use_cache=False,
                ).logits
            teacher_labels = inputs["teacher_labels"]
        temperatures = {
            "student_temperature": self.args.uld_student_temperature,
            "teacher_temperature": self.args.uld_teacher_temperature,
        }
        if self.args.uld_alignment == "offsets":
            return offsets_uld_loss(
                student_logits,
                teacher,
                self._compared_labels(inputs),
                teacher_labels,
                inputs["uld_groups"],
                inputs["teacher_uld_groups"],
                top_k=self.args.uld_top_k,
                reduction="sum",
                **temperatures,
            )
        return uld_loss(
            student_logits,
            teacher,
            self._compared_labels(inputs),
            teacher_labels,
            skip_student_eos=self.args.uld_skip_student_eos,
            skip_teacher_eos=self.args.uld_skip_teacher_eos,
            reduction="sum",
            top_k=self.args.uld_top_k,
            **temperatures,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        packed_labels = inputs["labels"]
        # An MoE student returns its router load-balancing loss when asked, as in SFT.
        aux_loss_enabled = getattr(self, "aux_loss_enabled", False)
        router_kwargs = {"output_router_logits": True} if aux_loss_enabled else {}
        # Padding-free batches carry `position_ids` instead of an attention mask (see `ULDDataCollator`).
        layout = {key: inputs[key] for key in ("attention_mask", "position_ids") if key in inputs}
        outputs = model(input_ids=inputs["input_ids"], use_cache=False, **layout, **router_kwargs)
        # Prompt-learning adapters (prompt tuning, p-tuning) prepend virtual tokens, whose logits predict no token of
        # the sample: the sample's logits are the last ones.
        logits = outputs.logits[:, outputs.logits.shape[1] - inputs["input_ids"].shape[1] :]
        # The loss and the alignment work on one padded row per sample, whatever the student's layout.
        inputs, index, _ = unpack_padding_free(inputs)
        if index is not None:
            logits = logits[0][index]
        labels = inputs["labels"]
        predicted = labels[:, 1:] != IGNORE_INDEX
        predicted_logits = logits[:, :-1][predicted]
        # At least float32, like the ULD term, whatever the model's dtype.
        predicted_logits = predicted_logits.to(torch.promote_types(predicted_logits.dtype, torch.float32))
        targets = labels[:, 1:][predicted]
        ce_sum = F.cross_entropy(
            predicted_logits, targets, reduction="sum", label_smoothing=self.args.label_smoothing_factor
        )
        uld_sum = self._uld_sum(logits, inputs)

        local_counts = self._token_counts(inputs).to(ce_sum.device)
        if mode == "train" and num_items_in_batch is not None:
            ce_count, uld_count = num_items_in_batch, self._num_aligned_in_batch
            # The counts cover every process and DDP averages the gradients, so each process contributes its share.
            world_scale = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
        else:
            (ce_count, uld_count), world_scale = local_counts, 1
        if self._ce_loss_func is not None:
            ce = self._ce_loss_func(
                outputs, packed_labels, num_items_in_batch=num_items_in_batch if mode == "train" else None
            )
        else:
            ce = ce_sum / torch.as_tensor(ce_count, device=ce_sum.device).clamp(min=1)
        uld = uld_sum / torch.as_tensor(uld_count, device=uld_sum.device).clamp(min=1)
        loss = (self.args.uld_crossentropy_weight * ce + self.args.uld_distillation_weight * uld) * world_scale
        aux_loss = None
        if aux_loss_enabled:
            # A per-micro-batch mean, which DDP averages across processes: spread over the accumulation steps when the
            # Trainer leaves their averaging to the loss (it does when `num_items_in_batch` is given).
            steps = (
                self.current_gradient_accumulation_steps if mode == "train" and num_items_in_batch is not None else 1
            )
            aux_loss = outputs.aux_loss
            loss = loss + self.router_aux_loss_coef * aux_loss / steps

        self._record_metrics(mode, inputs, predicted_logits, targets, ce_sum, uld_sum, local_counts, aux_loss)
        return (loss, outputs) if return_outputs else loss

    @torch.no_grad()
    def _record_metrics(self, mode, inputs, predicted_logits, targets, ce_sum, uld_sum, counts, aux_loss) -> None:
        """Adds this micro-batch's sums, over all processes, to the totals that `log` turns into means."""
        predicted_logits = predicted_logits.detach()
        log_probs = predicted_logits.log_softmax(dim=-1)
        entropy_sum = -(log_probs.exp() * log_probs).sum()
        correct = (predicted_logits.argmax(dim=-1) == targets).sum()
        device = ce_sum.device
        sums = torch.stack(
            [
                ce_sum.detach(),
                uld_sum.detach().to(device),
                *counts.to(device),
                correct.to(device),
                entropy_sum.to(device),
                (aux_loss.detach() if aux_loss is not None else torch.zeros((), device=device)).to(device),
                torch.ones((), device=device),
                inputs["attention_mask"].sum().to(device),
                *self._alignment_sums(inputs).to(device),
            ]
        ).double()
        sums = self.accelerator.gather(sums).view(-1, len(_METRIC_SUMS)).sum(dim=0).cpu()
        self._uld_totals[mode] += sums

    def _alignment_sums(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The alignment-health sums of a batch (see `_METRIC_SUMS`), in float64 on the CPU."""
        student_counts = (self._compared_labels(inputs)[:, 1:] != IGNORE_INDEX).sum(dim=1).cpu()
        if self.teacher_model is None:
            teacher_counts = inputs["teacher_num_tokens"].cpu()
        else:
            teacher_counts = (inputs["teacher_labels"][:, 1:] != IGNORE_INDEX).sum(dim=1).cpu()
        if self.args.uld_alignment == "offsets":
            student_aligned, teacher_aligned = _tokens_in_common_groups(
                inputs["uld_groups"].cpu(), inputs["teacher_uld_groups"].cpu()
            )
        else:
            aligned = aligned_token_counts(
                student_counts,
                teacher_counts,
                skip_student_eos=self.args.uld_skip_student_eos,
                skip_teacher_eos=self.args.uld_skip_teacher_eos,
            ).sum()
            student_aligned = teacher_aligned = aligned
        mass_sum, mass_rows = torch.zeros(()), torch.zeros(())
        if "teacher_remaining_mass" in inputs:
            remaining = inputs["teacher_remaining_mass"].detach().double().cpu()
            rows = torch.arange(remaining.shape[1])[None, :] < teacher_counts[:, None]
            mass_sum, mass_rows = (1 - remaining)[rows].sum(), rows.sum()
        return torch.stack(
            [
                student_counts.sum(),
                teacher_counts.sum(),
                torch.as_tensor(student_aligned),
                torch.as_tensor(teacher_aligned),
                (student_counts - teacher_counts).abs().sum(),
                torch.tensor(len(student_counts)),
                mass_sum,
                mass_rows,
            ]
        ).double()

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        totals = dict(zip(_METRIC_SUMS, self._uld_totals[mode].tolist()))
        if mode == "train":
            self._num_train_tokens += int(totals["num_tokens"])
        if totals["ce_count"] > 0:
            prefix = "eval_" if mode == "eval" else ""
            logs[f"{prefix}ce_loss"] = totals["ce_sum"] / totals["ce_count"]
            logs[f"{prefix}uld_loss"] = totals["uld_sum"] / max(totals["uld_count"], 1)
            logs[f"{prefix}mean_token_accuracy"] = totals["correct"] / totals["ce_count"]
            logs[f"{prefix}entropy"] = totals["entropy_sum"] / totals["ce_count"]
            logs[f"{prefix}num_tokens"] = self._num_train_tokens
            if getattr(self, "aux_loss_enabled", False):
                logs[f"{prefix}aux_loss"] = totals["aux_sum"] / max(totals["micro_batches"], 1)
            # Alignment health: a tokenization mismatch that leaves few tokens paired shows here, not in the loss.
            for side in ("student", "teacher"):
                answer_tokens = max(totals[f"{side}_answer_tokens"], 1)
                logs[f"{prefix}aligned_share_{side}"] = totals[f"{side}_aligned_tokens"] / answer_tokens
            logs[f"{prefix}length_mismatch"] = totals["length_mismatch_sum"] / max(totals["samples"], 1)
            if totals["topk_mass_rows"] > 0:
                logs[f"{prefix}teacher_topk_mass"] = totals["topk_mass_sum"] / totals["topk_mass_rows"]
        self._uld_totals[mode].zero_()
        super().log(logs, start_time)

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
    ) -> None:
        """
        Writes `README.md` in `args.output_dir`: a model card naming the teacher, the ULD hyper-parameters and the ULD
        paper.

        Args:
            model_name (`str`, *optional*):
                Name of the model.
            dataset_name (`str`, *optional*):
                Name of the dataset used for training.
            tags (`str` or `list[str]`, *optional*):
                Tags added to the card's metadata.
        """
        if not self.is_world_process_zero():
            return
        base_model = getattr(self.model, "name_or_path", None)
        teacher = self.teacher_name_or_path or None
        # Local folders are not Hub ids: name them without the path of the training machine.
        if teacher and os.path.isdir(teacher):
            teacher = os.path.basename(os.path.normpath(teacher))
        hyperparameters = training_hyperparameters(self.args)
        if "teacher_model_name_or_path" in hyperparameters:
            hyperparameters["teacher_model_name_or_path"] = teacher
        card = render_uld_model_card(
            self.args.hub_model_id or model_name or os.path.basename(os.path.abspath(self.args.output_dir)),
            base_model=None if not base_model or os.path.isdir(base_model) else base_model,
            teacher_model=teacher,
            datasets=None if dataset_name and os.path.exists(dataset_name) else dataset_name,
            tags=[*self._tag_names, *([tags] if isinstance(tags, str) else list(tags or []))],
            hyperparameters=hyperparameters,
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))


__all__ = ["ULDTrainer", "load_teacher_model"]
