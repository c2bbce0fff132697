"""TRL's SFT feature list, walked with ULDTrainer: each feature trains (one step, a finite loss, the student changed)
or is refused with the documented error.

The list follows what TRL's own SFT tests exercise (dataset kinds, loss options, PEFT, packing, evaluation, ...); the
deeper checks of each feature (exact losses, gradients) live in test_uld_sft_compat.py and test_uld_trainer.py.
Vision-language models, Liger kernels, DeepSpeed/FSDP, flash-attention and quantization need hardware or packages this
suite does not have, and are not listed.
"""

import copy
import math

import pytest
import torch
from datasets import Dataset
from transformers import TrainingArguments

from eurobert_hf.trainers import ULDTrainer
from tests.test_uld_trainer import make_config
from tests.uld_fixtures import COMPLETIONS, PROMPTS, student_tokenizer, teacher_tokenizer, tiny_student, tiny_teacher

TEXTS = [prompt + completion for prompt, completion in zip(PROMPTS, COMPLETIONS)]
CONVERSATIONS = [
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": completion.strip()},
        {"role": "user", "content": "Sure?"},
        {"role": "assistant", "content": "Yes."},
    ]
    for prompt, completion in zip(PROMPTS, COMPLETIONS)
]


def _data(kind: str) -> Dataset:
    columns = {
        "language_modeling": {"text": TEXTS[:4]},
        "prompt_completion": {"prompt": PROMPTS[:4], "completion": COMPLETIONS[:4]},
        "conversational_prompt_completion": {
            "prompt": [[{"role": "user", "content": p}] for p in PROMPTS[:4]],
            "completion": [[{"role": "assistant", "content": c.strip()}] for c in COMPLETIONS[:4]],
        },
        "conversational_language_modeling": {"messages": CONVERSATIONS[:4]},
        "pretokenized": {"input_ids": [[464, 3139, 286, 4881]] * 4},
    }[kind]
    return Dataset.from_dict(columns)


def _peft(kind: str):
    from peft import LoraConfig, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig

    return {
        "lora": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
        "prefix_tuning": PrefixTuningConfig(num_virtual_tokens=2, task_type="CAUSAL_LM"),
        "prompt_tuning": PromptTuningConfig(num_virtual_tokens=2, task_type="CAUSAL_LM"),
        "p_tuning": PromptEncoderConfig(num_virtual_tokens=2, encoder_hidden_size=8, task_type="CAUSAL_LM"),
    }[kind]


# feature: (dataset kind, config overrides, trainer keyword arguments, None if it trains else the documented error)
FEATURES = {
    "language_modeling": ("language_modeling", {}, {}, None),
    "prompt_completion": ("prompt_completion", {}, {}, None),
    "conversational_prompt_completion": ("conversational_prompt_completion", {}, {}, None),
    "conversational_language_modeling": ("conversational_language_modeling", {}, {}, None),
    "dataset_text_field": ("language_modeling", {"dataset_text_field": "text"}, {}, None),
    "formatting_func": ("prompt_completion", {}, {"formatting_func": lambda e: e["prompt"] + e["completion"]}, None),
    "formatting_func_with_completion_only_loss": (
        "prompt_completion",
        {"completion_only_loss": True},
        {"formatting_func": lambda e: e["prompt"] + e["completion"]},
        "formatting_func",
    ),
    "completion_only_loss": ("prompt_completion", {"completion_only_loss": True}, {}, None),
    "completion_only_loss_false": ("prompt_completion", {"completion_only_loss": False}, {}, None),
    "assistant_only_loss": ("conversational_language_modeling", {"assistant_only_loss": True}, {}, None),
    "assistant_only_loss_on_text": ("language_modeling", {"assistant_only_loss": True}, {}, "assistant_only_loss"),
    "streaming": ("language_modeling", {}, {"_iterable": True}, None),
    "with_transform": ("prompt_completion", {}, {"_transform": True}, None),
    "pretokenized": ("pretokenized", {}, {}, "teacher must read the same text"),
    "max_length": ("prompt_completion", {"max_length": 6}, {}, None),
    "shuffle_dataset": ("prompt_completion", {"shuffle_dataset": True}, {}, None),
    "eos_token": ("prompt_completion", {"eos_token": "!"}, {}, None),
    "pad_token": ("prompt_completion", {"pad_token": "!"}, {}, None),
    "label_smoothing": ("prompt_completion", {"label_smoothing_factor": 0.1}, {}, None),
    "padding_free": ("prompt_completion", {"padding_free": True}, {}, None),
    "packing_bfd": ("language_modeling", {"packing": True}, {}, "Packing"),
    "packing_wrapped": ("language_modeling", {"packing": True, "packing_strategy": "wrapped"}, {}, "Packing"),
    "loss_type_dft": ("prompt_completion", {"loss_type": "dft"}, {}, "loss_type"),
    "truncation_keep_end": ("prompt_completion", {"truncation_mode": "keep_end"}, {}, "truncation_mode"),
    "gradient_accumulation": ("prompt_completion", {"gradient_accumulation_steps": 2}, {}, None),
    "gradient_checkpointing": ("prompt_completion", {"gradient_checkpointing": True}, {}, None),
    "eval_and_metric_for_best_model": (
        "prompt_completion",
        {
            "eval_strategy": "steps",
            "eval_steps": 1,
            "save_strategy": "steps",
            "save_steps": 1,
            "metric_for_best_model": "eval_mean_token_accuracy",
            "load_best_model_at_end": True,
        },
        {"_eval": True},
        None,
    ),
    "multiple_eval_datasets": (
        "prompt_completion",
        {"eval_strategy": "steps", "eval_steps": 1},
        {"_evals": True},
        None,
    ),
    "training_arguments_as_args": ("prompt_completion", {}, {"_training_arguments": True}, None),
    "peft_lora": ("prompt_completion", {}, {"_peft": "lora"}, None),
    "peft_prefix_tuning": ("prompt_completion", {}, {"_peft": "prefix_tuning"}, None),
    "peft_prompt_tuning": ("prompt_completion", {}, {"_peft": "prompt_tuning"}, None),
    "peft_p_tuning": ("prompt_completion", {}, {"_peft": "p_tuning"}, None),
}


def _build(tmp_path, kind: str, overrides: dict, options: dict) -> ULDTrainer:
    options = dict(options)
    dataset = _data(kind)
    if options.pop("_iterable", False):
        dataset = dataset.to_iterable_dataset()
    if options.pop("_transform", False):
        raw = Dataset.from_dict({"q": dataset["prompt"], "a": dataset["completion"]})
        dataset = raw.with_transform(lambda batch: {"prompt": batch["q"], "completion": batch["a"]})
    if options.pop("_eval", False):
        options["eval_dataset"] = _data(kind).select(range(2))
    if options.pop("_evals", False):
        options["eval_dataset"] = {"a": _data(kind).select(range(2)), "b": _data(kind).select(range(2, 4))}
    if "_peft" in options:
        options["peft_config"] = _peft(options.pop("_peft"))
    args = make_config(tmp_path, max_steps=1, **overrides)
    if options.pop("_training_arguments", False):
        args = TrainingArguments(
            str(tmp_path),
            max_steps=1,
            logging_steps=1,
            per_device_train_batch_size=2,
            use_cpu=True,
            report_to="none",
            bf16=False,
        )
    return ULDTrainer(
        tiny_student(),
        args,
        train_dataset=dataset,
        # A copy: `eos_token` / `pad_token` change the tokenizer.
        processing_class=copy.deepcopy(student_tokenizer()),
        teacher_model=tiny_teacher(),
        teacher_processing_class=teacher_tokenizer(),
        **options,
    )


@pytest.mark.parametrize("feature", list(FEATURES))
def test_sft_feature(tmp_path, feature):
    kind, overrides, options, error = FEATURES[feature]
    if error is not None:
        with pytest.raises(ValueError, match=error):
            _build(tmp_path, kind, overrides, options)
        return
    trainer = _build(tmp_path, kind, overrides, options)
    trainable = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert logs and all(math.isfinite(log["loss"]) and log["uld_loss"] > 0 for log in logs)
    assert any(not torch.equal(trainable[n], p) for n, p in trainer.model.named_parameters() if p.requires_grad)
