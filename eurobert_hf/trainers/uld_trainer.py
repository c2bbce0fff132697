"""`ULDTrainer`: TRL's `SFTTrainer` with Universal Logit Distillation from a teacher with another tokenizer."""

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from datasets import Dataset, IterableDataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollator,
    EvalPrediction,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProcessorMixin,
    TrainerCallback,
)
from transformers.utils import logging
from trl import SFTTrainer
from trl.models import prepare_deepspeed, prepare_fsdp

from ..hub.cards import ULD_CITATION, render_uld_model_card, training_hyperparameters
from .teacher_cache import CACHE_COLUMNS, TeacherCacheCollator, check_teacher_cache, teacher_probs_from_batch
from .uld_alignment import ALIGNMENT_COLUMNS, count_aligned_groups, offsets_uld_loss
from .uld_config import ULDConfig
from .uld_data import IGNORE_INDEX, PREPARED_COLUMNS, ULDDataCollator, count_aligned_tokens, prepare_uld_dataset
from .uld_loss import uld_loss

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


class ULDTrainer(SFTTrainer):
    """
    Trainer for Universal Logit Distillation (ULD) of a causal language model from a teacher that may use another
    tokenizer, as in [Towards Cross-Tokenizer Distillation: the Universal Logit Distillation Loss for
    LLMs](https://huggingface.co/papers/2402.12030).

    A drop-in replacement of [`~trl.SFTTrainer`]: pass a [`ULDConfig`] and a teacher. Each sample is tokenized for
    both models, each rendering the prompt its own way (see `eurobert_hf.trainers.uld_data`), and the loss is
    `uld_crossentropy_weight · CE + uld_distillation_weight · ULD` on the completion tokens, normalised by token counts
    of the whole optimizer step (see [`ULDConfig`]). Train and eval logs report both terms as `ce_loss` and
    `uld_loss`.

    Args:
        model (`str` or [`~transformers.PreTrainedModel`] or [`~peft.PeftModel`]):
            The student, as in [`~trl.SFTTrainer`].
        teacher_model (`str` or [`~transformers.PreTrainedModel`], *optional*):
            The teacher, a causal language model or its name or path (loaded with `args.teacher_model_init_kwargs`).
            Defaults to `args.teacher_model_name_or_path`. It runs in eval mode without gradients. Without either, the
            datasets must carry a teacher cache (`eurobert_hf.trainers.teacher_cache.cache_teacher_probs` over a
            `prepare_uld_dataset` output) and no teacher is held in memory.
        args ([`ULDConfig`], *optional*):
            Configuration. Defaults to `ULDConfig("<model name>-ULD")`.
        data_collator ([`~transformers.DataCollator`], *optional*):
            Defaults to [`~eurobert_hf.trainers.uld_data.ULDDataCollator`].
        train_dataset ([`~datasets.Dataset`] or [`~datasets.IterableDataset`]):
            Prompt–completion (plain or conversational) or `messages` dataset.
        eval_dataset ([`~datasets.Dataset`], [`~datasets.IterableDataset`] or `dict`, *optional*):
            Same formats as `train_dataset`.
        processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            The student's tokenizer. Defaults to the student's own. Without a padding token, the EOS token pads.
        teacher_processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            The teacher's tokenizer. Defaults to `args.teacher_tokenizer_name_or_path`, else the teacher's own name.
            It may lack a padding token.
        compute_metrics, callbacks, optimizers, preprocess_logits_for_metrics, peft_config:
            As in [`~trl.SFTTrainer`].
        formatting_func (`Callable`, *optional*):
            Not supported (ULD needs the prompt and the completion apart); format the dataset into `prompt` and
            `completion` columns instead. Kept in the signature so that SFT scripts fail with a clear message.
    """

    _tag_names = ["trl", "uld", "distillation"]
    _name = "ULD"
    _paper = {
        "title": "Towards Cross-Tokenizer Distillation: the Universal Logit Distillation Loss for LLMs",
        "id": "2402.12030",
        "citation": ULD_CITATION,
    }

    def __init__(
        self,
        model: "str | PreTrainedModel",
        teacher_model: "str | PreTrainedModel | None" = None,
        args: ULDConfig | None = None,
        data_collator: DataCollator | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset: Dataset | IterableDataset | dict[str, Dataset | IterableDataset] | None = None,
        processing_class: PreTrainedTokenizerBase | ProcessorMixin | None = None,
        teacher_processing_class: PreTrainedTokenizerBase | ProcessorMixin | None = None,
        compute_metrics: Callable[[EvalPrediction], dict] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        preprocess_logits_for_metrics: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        peft_config: "Any | None" = None,
        formatting_func: Callable[[dict], str] | None = None,
    ):
        model_name = model if isinstance(model, str) else model.name_or_path
        if args is None:
            args = ULDConfig(f"{os.path.basename(model_name.rstrip('/')) or 'model'}-ULD")
        elif not isinstance(args, ULDConfig):
            raise TypeError(
                f"`args` must be a `ULDConfig`, got `{type(args).__name__}`. Build a `ULDConfig` with the same values "
                "(it accepts every `SFTConfig` field)."
            )
        if formatting_func is not None:
            raise ValueError(
                "`formatting_func` is not supported by ULDTrainer: ULD needs the prompt and the completion apart, to "
                "render each for its own model. Map the dataset into `prompt` and `completion` columns instead."
            )
        if train_dataset is None:
            raise ValueError("`train_dataset` is required.")

        teacher_model = teacher_model if teacher_model is not None else args.teacher_model_name_or_path
        teacher_name = teacher_model if isinstance(teacher_model, str) else getattr(teacher_model, "name_or_path", "")
        # Without a teacher, every dataset must carry a teacher cache (checked when the datasets are prepared).
        if teacher_model is not None:
            if isinstance(teacher_model, str):
                teacher_model = self._load_teacher(teacher_model, args)
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
            )
            if teacher_model is None:
                data_collator = TeacherCacheCollator(data_collator)

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
        )
        _check_vocabulary(self.model, _tokenizer_of(self.processing_class), "student")

        self.teacher_processing_class = teacher_processing_class
        self.teacher_name_or_path = teacher_name
        self.teacher_model = None if teacher_model is None else self._prepare_teacher(teacher_model)
        self.train_dataset = self._prepare_uld_dataset(self.train_dataset, "train")
        if isinstance(self.eval_dataset, dict):
            self.eval_dataset = {
                name: self._prepare_uld_dataset(data, name) for name, data in self.eval_dataset.items()
            }
        elif self.eval_dataset is not None:
            self.eval_dataset = self._prepare_uld_dataset(self.eval_dataset, "eval")

        # `compute_loss` normalises by the token counts of the whole optimizer step (see `get_batch_samples`), so the
        # Trainer must not divide the loss by the number of accumulation steps again.
        self.model_accepts_loss_kwargs = True
        self._num_aligned_in_batch = None
        self._uld_totals = {"train": torch.zeros(4, dtype=torch.float64), "eval": torch.zeros(4, dtype=torch.float64)}

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

    @staticmethod
    def _load_teacher(name_or_path: str, args: ULDConfig) -> PreTrainedModel:
        init_kwargs = dict(args.teacher_model_init_kwargs or {})
        dtype = init_kwargs.pop("dtype", init_kwargs.pop("torch_dtype", None)) or torch.float32
        init_kwargs["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
        init_kwargs.setdefault("trust_remote_code", args.trust_remote_code)
        return AutoModelForCausalLM.from_pretrained(name_or_path, **init_kwargs)

    def _prepare_uld_dataset(self, dataset: Dataset | IterableDataset, name: str) -> Dataset | IterableDataset:
        if self.teacher_model is None:
            check_teacher_cache(
                dataset,
                top_k=self.args.uld_top_k,
                teacher_temperature=self.args.uld_teacher_temperature,
                dataset_name=name,
            )
        with self.args.main_process_first(desc=f"ULD tokenization of the {name} dataset"):
            return prepare_uld_dataset(
                dataset,
                _tokenizer_of(self.processing_class),
                self.teacher_processing_class and _tokenizer_of(self.teacher_processing_class),
                max_length=self.args.max_length,
                num_proc=self.args.dataset_num_proc,
                dataset_name=name,
                alignment=self.args.uld_alignment,
                pair_trailing_textless=not (self.args.uld_skip_student_eos or self.args.uld_skip_teacher_eos),
            )

    def _set_signature_columns_if_needed(self):
        # The Trainer drops dataset columns that the model's forward does not take; the teacher's are needed too.
        if self._signature_columns is None:
            self._signature_columns = [
                *PREPARED_COLUMNS,
                *ALIGNMENT_COLUMNS,
                *CACHE_COLUMNS,
                # The cache collator checks that the rows of a batch keep the same number of probabilities.
                "teacher_cache_top_k",
            ]

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        if isinstance(eval_dataset, dict):
            eval_dataset = {name: self._prepare_uld_dataset(data, name) for name, data in eval_dataset.items()}
        elif eval_dataset is not None and not isinstance(eval_dataset, str):
            eval_dataset = self._prepare_uld_dataset(eval_dataset, metric_key_prefix)
        return super().evaluate(
            eval_dataset=eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
        )

    def _token_counts(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Completion tokens the cross-entropy scores and terms the ULD sum adds up (aligned tokens or groups)."""
        labels = batch["labels"]
        if self.args.uld_alignment == "offsets":
            num_aligned = count_aligned_groups(batch["uld_groups"], batch["teacher_uld_groups"]).sum()
        else:
            num_aligned = count_aligned_tokens(
                labels, batch["teacher_labels"], self.args.uld_skip_student_eos, self.args.uld_skip_teacher_eos
            ).sum()
        return torch.stack([(labels[:, 1:] != IGNORE_INDEX).sum().cpu(), num_aligned.cpu()])

    def get_batch_samples(self, epoch_iterator, num_batches: int, device: torch.device) -> tuple[list, torch.Tensor]:
        """
        Collects the micro-batches of one optimizer step and counts, over all of them (and over all processes with
        `average_tokens_across_devices`), the completion tokens of the cross-entropy (returned as
        `num_items_in_batch`) and the aligned completion tokens of ULD (kept for `compute_loss`).
        """
        batch_samples = []
        for _ in range(num_batches):
            try:
                batch_samples.append(next(epoch_iterator))
            except StopIteration:
                break
        counts = torch.zeros(2, dtype=torch.long, device=device)
        for batch in batch_samples:
            counts += self._token_counts(batch).to(device)
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            counts = self.accelerator.gather(counts).view(-1, 2).sum(dim=0)
        self._num_aligned_in_batch = counts[1]
        return batch_samples, counts[0]

    def _uld_sum(self, student_logits: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The ULD term summed over the aligned tokens (or groups) of the batch."""
        if self.teacher_model is None:
            teacher, teacher_labels = teacher_probs_from_batch(inputs), None
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
                inputs["labels"],
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
            inputs["labels"],
            teacher_labels,
            skip_student_eos=self.args.uld_skip_student_eos,
            skip_teacher_eos=self.args.uld_skip_teacher_eos,
            reduction="sum",
            top_k=self.args.uld_top_k,
            **temperatures,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        labels = inputs["labels"]
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        predicted = labels[:, 1:] != IGNORE_INDEX
        predicted_logits = outputs.logits[:, :-1][predicted]
        # At least float32, like the ULD term, whatever the model's dtype.
        predicted_logits = predicted_logits.to(torch.promote_types(predicted_logits.dtype, torch.float32))
        ce_sum = F.cross_entropy(predicted_logits, labels[:, 1:][predicted], reduction="sum")
        uld_sum = self._uld_sum(outputs.logits, inputs)

        local_counts = self._token_counts(inputs).to(ce_sum.device)
        if mode == "train" and num_items_in_batch is not None:
            ce_count, uld_count = num_items_in_batch, self._num_aligned_in_batch
            # The counts cover every process and DDP averages the gradients, so each process contributes its share.
            world_scale = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
        else:
            (ce_count, uld_count), world_scale = local_counts, 1
        ce = ce_sum / torch.as_tensor(ce_count, device=ce_sum.device).clamp(min=1)
        uld = uld_sum / torch.as_tensor(uld_count, device=uld_sum.device).clamp(min=1)
        loss = (self.args.uld_crossentropy_weight * ce + self.args.uld_distillation_weight * uld) * world_scale

        totals = torch.cat([torch.stack([ce_sum.detach(), uld_sum.detach().to(ce_sum.device)]), local_counts]).double()
        self._uld_totals[mode] += self.accelerator.gather(totals).view(-1, 4).sum(dim=0).cpu()
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        ce_sum, uld_sum, ce_count, uld_count = self._uld_totals[mode].tolist()
        if ce_count > 0:
            prefix = "eval_" if mode == "eval" else ""
            logs[f"{prefix}ce_loss"] = ce_sum / ce_count
            logs[f"{prefix}uld_loss"] = uld_sum / max(uld_count, 1)
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
            tags=[tags] if isinstance(tags, str) else list(tags or []),
            hyperparameters=hyperparameters,
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))


__all__ = ["ULDTrainer"]
