"""Configuration of the [`ULDTrainer`] (Universal Logit Distillation, Boizard et al. 2024, arXiv 2402.12030)."""

import math
from dataclasses import dataclass, field, fields
from typing import Any

from transformers import TrainingArguments
from trl import SFTConfig

ULD_ALIGNMENTS = ("positional", "offsets")
# Lowest accepted temperature: logits are divided by it, so smaller values only produce overflow or zero gradients.
MIN_TEMPERATURE = 1e-2


@dataclass
class ULDConfig(SFTConfig):
    r"""
    Configuration class for the [`ULDTrainer`].

    Extends [`~trl.SFTConfig`] with the parameters of Universal Logit Distillation (ULD), the cross-tokenizer
    distillation of [Towards Cross-Tokenizer Distillation: the Universal Logit Distillation Loss for
    LLMs](https://huggingface.co/papers/2402.12030). The training loss is

        uld_crossentropy_weight · CE + uld_distillation_weight · ULD

    where CE is the student's next-token cross-entropy on the completion and ULD is the L1 distance between the sorted
    next-token probabilities of the student and the teacher, averaged over the aligned completion tokens. Field names
    follow TRL's `GOLDConfig` where they mean the same thing, so configurations carry over; the defaults follow the
    paper and the authors' runs instead (GOLD drops the cross-entropy term by default).

    Both terms are normalised by token counts gathered over the whole optimizer step (all gradient-accumulation
    micro-batches and, with `average_tokens_across_devices=True`, all processes): CE by the number of completion tokens,
    ULD by the number of aligned completion tokens. The loss and its gradients therefore do not depend on how a batch is
    split into micro-batches or processes. The paper averages ULD per sample first and then over samples; the
    token-normalised form weights samples by their number of aligned tokens, which is the only form that is invariant
    to gradient accumulation.

    Parameters:
        > Parameters that control the teacher

        teacher_model_name_or_path (`str`, *optional*):
            Name or path of the teacher, loaded with [`~transformers.AutoModelForCausalLM.from_pretrained`] when the
            trainer gets no `teacher_model`.
        teacher_model_init_kwargs (`dict[str, Any]`, *optional*):
            Keyword arguments for [`~transformers.AutoModelForCausalLM.from_pretrained`] when the teacher is loaded
            from a name or path. Defaults to `model_init_kwargs` without its `revision`; `dtype` defaults to
            `float32`.
        teacher_tokenizer_name_or_path (`str`, *optional*):
            Name or path of the teacher's tokenizer, used when the trainer gets no `teacher_processing_class`. Defaults
            to the teacher's own name or path.

        > Parameters that control the ULD loss

        uld_crossentropy_weight (`float`, *optional*, defaults to `1.0`):
            Weight of the student's cross-entropy on the completion tokens (1 in the paper).
        uld_distillation_weight (`float`, *optional*, defaults to `1.5`):
            Weight λ of the ULD term (1.5 in the authors' runs).
        uld_student_temperature (`float`, *optional*, defaults to `1.0`):
            Temperature of the student's softmax in the ULD term.
        uld_teacher_temperature (`float`, *optional*, defaults to `1.0`):
            Temperature of the teacher's softmax in the ULD term.
        uld_skip_student_eos (`bool`, *optional*, defaults to `True`):
            Whether to leave the student's last completion token out of the ULD term. The authors' reference code
            does: their students are base models whose completions end with the EOS token appended for training, a
            token with no counterpart in the teacher's answer.
        uld_skip_teacher_eos (`bool`, *optional*, defaults to `False`):
            Whether to leave the teacher's last completion token out of the ULD term. The authors' reference code keeps
            it: the teacher's answer is its own generation, whose last token is its real end of answer.
        uld_alignment (`str`, *optional*, defaults to `"positional"`):
            How completion tokens of the two tokenizers are paired. `"positional"` (the paper): the k-th student
            completion token with the k-th teacher completion token, the longer side truncated. `"offsets"`: groups of
            tokens covering the same characters of the completion text (see `eurobert_hf.trainers.uld_alignment`;
            needs `uld_top_k` and fast tokenizers). With offsets, the tokens after the completion text (EOS, end of
            turn) are compared, as one group, only when neither `uld_skip_*_eos` is set.
        uld_top_k (`int`, *optional*):
            When set, only the k largest probabilities of each side are sorted and the remaining mass is accounted for
            in closed form (faster on large vocabularies; see `uld_loss` for the error bound). `None` sorts the full
            vocabularies, as the paper. Required by `uld_alignment="offsets"`.

    The data-preparation parameters of [`~trl.SFTConfig`] apply with these differences:

    - Each sample is tokenized twice, by the student's and by the teacher's tokenizer, each rendering conversational
      prompts with its own chat template (plain text when the tokenizer has none). SFT's own dataset preparation is
      therefore always skipped (`dataset_kwargs["skip_prepare_dataset"]` is set to `True`).
    - `max_length` bounds each side's sequence. Prompts are truncated from the left first, so that the completion
      stays whole and aligned; a completion longer than `max_length` keeps its start.
    - `completion_only_loss=False` (prompt–completion data) and `assistant_only_loss=False` (`messages` data, SFT's
      default) extend the student's cross-entropy beyond what ULD compares: ULD always compares the completion, or
      every assistant turn, which is the text both models share.
    - `padding_free=True` concatenates the student's samples of a batch into one row (the teacher's stay padded);
      the loss and the alignment stay per sample, so it gives the padded loss and gradients.
    - `packing`, `loss_type="dft"` and `truncation_mode="keep_end"` are refused: packing cuts and joins samples
      across rows, while ULD pairs the completion tokens of each whole sample with the teacher's.

    > [!NOTE]
    > Like [`~trl.SFTConfig`], `bf16` defaults to `True` and `gradient_checkpointing` to `True`; set them explicitly on
    > CPU.
    """

    _VALID_DICT_FIELDS = SFTConfig._VALID_DICT_FIELDS + ["teacher_model_init_kwargs"]

    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Name or path of the teacher, loaded with `AutoModelForCausalLM.from_pretrained` when the trainer "
            "gets no `teacher_model`."
        },
    )
    teacher_model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments for `AutoModelForCausalLM.from_pretrained` when the teacher is loaded from a "
            "name or path. Defaults to `model_init_kwargs` without its `revision`; `dtype` defaults to `float32`."
        },
    )
    teacher_tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Name or path of the teacher's tokenizer, used when the trainer gets no "
            "`teacher_processing_class`. Defaults to the teacher's own name or path."
        },
    )
    uld_crossentropy_weight: float = field(
        default=1.0,
        metadata={"help": "Weight of the student's cross-entropy on the completion tokens (1 in the paper)."},
    )
    uld_distillation_weight: float = field(
        default=1.5,
        metadata={"help": "Weight λ of the ULD term (1.5 in the authors' runs)."},
    )
    uld_student_temperature: float = field(
        default=1.0,
        metadata={"help": "Temperature of the student's softmax in the ULD term."},
    )
    uld_teacher_temperature: float = field(
        default=1.0,
        metadata={"help": "Temperature of the teacher's softmax in the ULD term."},
    )
    uld_skip_student_eos: bool = field(
        default=True,
        metadata={
            "help": "Whether to leave the student's last completion token out of the ULD term. The authors' "
            "reference does: it is the EOS appended for training, with no counterpart in the teacher's answer."
        },
    )
    uld_skip_teacher_eos: bool = field(
        default=False,
        metadata={
            "help": "Whether to leave the teacher's last completion token out of the ULD term. The authors' "
            "reference keeps it: the teacher's answer is its own generation, whose last token ends the answer."
        },
    )
    uld_alignment: str = field(
        default="positional",
        metadata={
            "help": "How completion tokens of the two tokenizers are paired: `positional` (the paper: k-th with k-th, "
            "the longer side truncated) or `offsets` (groups of tokens covering the same characters of the completion; "
            "needs `uld_top_k`).",
            "choices": list(ULD_ALIGNMENTS),
        },
    )
    uld_top_k: int | None = field(
        default=None,
        metadata={
            "help": "Sort only the k largest probabilities of each side and account for the remaining mass in closed "
            "form (faster on large vocabularies). `None` sorts the full vocabularies, as the paper."
        },
    )

    @classmethod
    def from_training_arguments(cls, args: TrainingArguments, **overrides: Any) -> "ULDConfig":
        """
        Builds a `ULDConfig` holding every field of `args` (a [`~transformers.TrainingArguments`], an
        [`~trl.SFTConfig`] or any subclass), the ULD fields at their defaults unless given in `overrides`. This is how
        [`ULDTrainer`] accepts the same `args` as [`~trl.SFTTrainer`].
        """
        # Only the fields that `ULDConfig` declares: a subclass of `TrainingArguments` may add its own.
        own_fields = {item.name for item in fields(cls) if item.init}
        values = {
            item.name: getattr(args, item.name) for item in fields(args) if item.init and item.name in own_fields
        }
        return cls(**{**values, **overrides})

    def __post_init__(self):
        super().__post_init__()
        self._validate_uld_fields()
        self._validate_data_fields()
        # SFT's preparation tokenizes for the student only; the ULD trainer prepares both sides itself.
        self.dataset_kwargs = {**(self.dataset_kwargs or {}), "skip_prepare_dataset": True}

    def __getstate__(self) -> dict[str, Any]:
        # The Trainer pickles its arguments into every checkpoint (`training_args.bin`), which `push_to_hub` uploads:
        # the pickled copy never holds the Hub token; this object keeps it for the Trainer's own Hub calls.
        state = dict(self.__dict__)
        for name in ("hub_token", "push_to_hub_token"):
            if name in state:
                state[name] = None
        return state

    def _validate_uld_fields(self) -> None:
        for name in ("uld_crossentropy_weight", "uld_distillation_weight"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"`{name}` must be a finite non-negative number, got {getattr(self, name)}.")
        if self.uld_crossentropy_weight == 0 and self.uld_distillation_weight == 0:
            raise ValueError(
                "`uld_crossentropy_weight` and `uld_distillation_weight` are both 0, so there is nothing to train. "
                "Set at least one of them to a positive value (the paper uses 1.0 and 1.5)."
            )
        for name in ("uld_student_temperature", "uld_teacher_temperature"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= MIN_TEMPERATURE):
                raise ValueError(
                    f"`{name}` must be a finite number of at least {MIN_TEMPERATURE}, got {getattr(self, name)}: the "
                    "logits are divided by it, and below that the softmax is one-hot in float32 and its gradients "
                    "overflow or vanish."
                )
        if self.uld_alignment not in ULD_ALIGNMENTS:
            raise ValueError(f"`uld_alignment` must be one of {ULD_ALIGNMENTS}, got {self.uld_alignment!r}.")
        if self.uld_top_k is not None and (isinstance(self.uld_top_k, bool) or self.uld_top_k < 1):
            raise ValueError(f"`uld_top_k` must be a positive integer or None, got {self.uld_top_k!r}.")
        if self.uld_alignment == "offsets" and self.uld_top_k is None:
            raise ValueError(
                "`uld_alignment='offsets'` merges the distributions of multi-token groups into product distributions, "
                "which only exist as top-k vectors: set `uld_top_k` (e.g. 64)."
            )

    def _validate_data_fields(self) -> None:
        if self.packing or self.eval_packing:
            raise ValueError(
                "Packing is not supported by ULD: it cuts and joins samples across rows, while the loss pairs the "
                "completion tokens of each whole sample with the teacher's. Set `packing=False` and "
                "`eval_packing=False`; `padding_free=True` removes the padding of the student's batches instead."
            )
        if self.padding_free and self.pad_to_multiple_of:
            raise ValueError(
                "`padding_free=True` concatenates the student's samples without padding, so `pad_to_multiple_of` has "
                "nothing to pad. Unset one of them."
            )
        if self.loss_type != "nll":
            raise ValueError(f"`loss_type={self.loss_type!r}` is not supported by ULD; use `loss_type='nll'`.")
        if self.truncation_mode != "keep_start":
            raise ValueError(
                f"`truncation_mode={self.truncation_mode!r}` is not supported by ULD, which truncates prompts from "
                "the left first to keep completions aligned. Leave `truncation_mode` at 'keep_start'."
            )
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(
                f"`max_length` must be at least 2 (one prompt token and one completion token), got {self.max_length}."
            )


__all__ = ["ULDConfig"]
