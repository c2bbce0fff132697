"""ULDTrainer as a drop-in for the installed TRL's SFTTrainer: its calling convention, its `args`, its script."""

import copy
import importlib.util
import inspect
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import TrainingArguments
from trl import SFTConfig, SFTTrainer

from eurobert_hf.trainers import ULDConfig, ULDTrainer
from eurobert_hf.trainers.uld_data import prepare_uld_dataset
from tests.test_uld_trainer import make_config
from tests.uld_fixtures import (
    COMPLETIONS,
    PROMPTS,
    prompt_completion_dataset,
    save_pretrained_pair,
    student_tokenizer,
    teacher_tokenizer,
    tiny_student,
    tiny_teacher,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _teacher() -> dict:
    return {"teacher_model": tiny_teacher(), "teacher_processing_class": teacher_tokenizer()}


def _positional_parameters(function) -> list[str]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [name for name, p in inspect.signature(function).parameters.items() if p.kind in kinds][1:]


def test_positional_arguments_are_sft_trainers_in_the_same_order():
    assert _positional_parameters(ULDTrainer.__init__) == _positional_parameters(SFTTrainer.__init__)
    keyword_only = [
        name
        for name, p in inspect.signature(ULDTrainer.__init__).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    assert keyword_only == ["teacher_model", "teacher_processing_class"]


def test_args_is_the_second_positional_argument(tmp_path):
    args = make_config(tmp_path, max_steps=1)
    trainer = ULDTrainer(
        tiny_student(), args, None, prompt_completion_dataset(2), None, student_tokenizer(), **_teacher()
    )
    assert trainer.args is args
    trainer.train()


@pytest.mark.parametrize("args_class", [TrainingArguments, SFTConfig])
def test_training_arguments_are_converted_like_sft_does(tmp_path, args_class):
    args = args_class(
        str(tmp_path),
        learning_rate=3e-3,
        max_steps=1,
        per_device_train_batch_size=2,
        use_cpu=True,
        report_to="none",
        bf16=False,
        gradient_checkpointing=False,
        save_strategy="no",
        seed=7,
    )
    trainer = ULDTrainer(
        tiny_student(),
        args,
        train_dataset=prompt_completion_dataset(2),
        processing_class=student_tokenizer(),
        **_teacher(),
    )
    assert isinstance(trainer.args, ULDConfig)
    assert (trainer.args.learning_rate, trainer.args.max_steps, trainer.args.seed) == (3e-3, 1, 7)
    assert trainer.args.uld_distillation_weight == 1.5  # the ULD fields at their defaults
    trainer.train()
    assert any("uld_loss" in log for log in trainer.state.log_history)


def test_compute_loss_func_replaces_the_cross_entropy_term(tmp_path):
    calls = []

    def scaled_ce(outputs, labels, num_items_in_batch=None):
        calls.append(num_items_in_batch)
        logits = outputs.logits[:, :-1].flatten(0, 1)
        return 3.0 * F.cross_entropy(logits, labels[:, 1:].flatten(), reduction="mean")

    losses = []
    for compute_loss_func in (scaled_ce, None):
        trainer = ULDTrainer(
            tiny_student(),
            make_config(tmp_path),
            train_dataset=prompt_completion_dataset(4),
            processing_class=student_tokenizer(),
            compute_loss_func=compute_loss_func,
            **_teacher(),
        )
        loss, batch = _loss_on_first_batch(trainer)
        losses.append(loss)
    with_func, plain = losses
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten())
    # Same ULD term; the cross-entropy term is the function's value instead.
    assert (with_func - plain).item() == pytest.approx((3.0 * ce - ce).item(), rel=1e-5)
    assert calls == [None]  # evaluation passes no count, as transformers' Trainer does


def test_optimizer_cls_and_kwargs_choose_the_optimizer(tmp_path):
    trainer = ULDTrainer(
        tiny_student(),
        make_config(tmp_path),
        train_dataset=prompt_completion_dataset(2),
        processing_class=student_tokenizer(),
        optimizer_cls_and_kwargs=(torch.optim.SGD, {"lr": 0.25, "momentum": 0.5}),
        **_teacher(),
    )
    optimizer = trainer.create_optimizer()
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.5


def test_quantization_config_is_accepted_like_sft(tmp_path, caplog):
    # An instantiated student is not re-loaded, so SFTTrainer (and ULDTrainer) ignore the quantization with a warning.
    trainer = ULDTrainer(
        tiny_student(),
        make_config(tmp_path),
        train_dataset=prompt_completion_dataset(2),
        processing_class=student_tokenizer(),
        quantization_config=object(),
        **_teacher(),
    )
    assert trainer.model is not None


def test_teacher_loads_with_the_students_init_kwargs(tmp_path):
    student_path, teacher_path = save_pretrained_pair(str(tmp_path / "models"))
    args = make_config(
        tmp_path / "out", teacher_model_name_or_path=teacher_path, model_init_kwargs={"dtype": "bfloat16"}
    )
    trainer = ULDTrainer(student_path, args, train_dataset=prompt_completion_dataset(2))
    assert trainer.model.dtype == torch.bfloat16 and trainer.teacher_model.dtype == torch.bfloat16
    args = make_config(
        tmp_path / "out",
        teacher_model_name_or_path=teacher_path,
        model_init_kwargs={"dtype": "bfloat16"},
        teacher_model_init_kwargs={"dtype": "float32"},
    )
    trainer = ULDTrainer(student_path, args, train_dataset=prompt_completion_dataset(2))
    assert trainer.model.dtype == torch.bfloat16 and trainer.teacher_model.dtype == torch.float32


# ------------------------------------------------------------------------------------------ language-modeling data


TEXTS = [prompt + completion for prompt, completion in zip(PROMPTS, COMPLETIONS)]


def _text_ids_and_predicted(tokenizer, input_ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
    has_bos = tokenizer.bos_token_id is not None and input_ids[0] == tokenizer.bos_token_id
    # The label at position 0 has no logits before it: it is never predicted.
    return input_ids[int(has_bos) :], [label for label in labels[1:] if label != -100]


def test_text_is_distilled_on_every_token_in_each_tokenization():
    student = student_tokenizer()
    # GPT-2 with a BOS token: the teacher predicts its first text token from the BOS, the student (no BOS) cannot.
    teacher = copy.deepcopy(student)
    teacher.add_bos_token = True
    if teacher("a")["input_ids"][0] != teacher.bos_token_id:
        pytest.skip("this transformers version's GPT-2 tokenizer ignores add_bos_token")
    sample = prepare_uld_dataset(Dataset.from_dict({"text": TEXTS[:2]}), student, teacher)[0]
    student_text, student_predicted = _text_ids_and_predicted(student, sample["input_ids"], sample["labels"])
    teacher_text, teacher_predicted = _text_ids_and_predicted(
        teacher, sample["teacher_input_ids"], sample["teacher_labels"]
    )
    assert student.decode(student_text) == teacher.decode(teacher_text) == TEXTS[0] + "<|endoftext|>"
    assert sample["teacher_input_ids"][0] == teacher.bos_token_id
    # Every text token but the first, which only the teacher could predict, on both sides: CE and ULD start together.
    assert student_predicted == student_text[1:]
    assert teacher_predicted == teacher_text[1:]


def test_text_with_the_same_bos_rule_keeps_every_predictable_token():
    sample = prepare_uld_dataset(Dataset.from_dict({"text": TEXTS[:1]}), student_tokenizer(), teacher_tokenizer())[0]
    sides = [
        (student_tokenizer(), sample["input_ids"], sample["labels"]),
        (teacher_tokenizer(), sample["teacher_input_ids"], sample["teacher_labels"]),
    ]
    has_bos = [ids[0] == tokenizer.bos_token_id for tokenizer, ids, _ in sides]
    for (tokenizer, input_ids, labels), bos in zip(sides, has_bos):
        text, predicted = _text_ids_and_predicted(tokenizer, input_ids, labels)
        assert tokenizer.decode(text) == TEXTS[0] + tokenizer.eos_token
        # Both with a BOS: every text token is predicted. Otherwise, from the second on, on both sides.
        assert predicted == text[0 if all(has_bos) else 1 :], bos


def _train_logs(trainer) -> list[dict]:
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert logs and all(math.isfinite(log["loss"]) and log["uld_loss"] > 0 for log in logs)
    return logs


@pytest.mark.parametrize(
    ("columns", "overrides", "formatting_func"),
    [
        ({"text": TEXTS[:4]}, {}, None),
        ({"body": TEXTS[:4]}, {"dataset_text_field": "body"}, None),
        ({"prompt": PROMPTS[:4], "completion": COMPLETIONS[:4]}, {}, lambda e: e["prompt"] + e["completion"]),
    ],
    ids=["text", "dataset_text_field", "formatting_func"],
)
def test_language_modeling_datasets_train(tmp_path, columns, overrides, formatting_func):
    trainer = ULDTrainer(
        tiny_student(),
        make_config(tmp_path, **overrides),
        train_dataset=Dataset.from_dict(columns),
        processing_class=student_tokenizer(),
        formatting_func=formatting_func,
        **_teacher(),
    )
    sample = trainer.train_dataset[0]
    assert student_tokenizer().decode(sample["input_ids"]) == TEXTS[0] + "<|endoftext|>"
    # Every text token after the first is predicted (CE on every token, as SFT).
    assert sample["labels"][1:] == sample["input_ids"][1:]
    _train_logs(trainer)


# ---------------------------------------------------------------------------------------- TRL's own sft.py, swapped


def swap_sft_for_uld(source: str) -> str:
    """The whole change a TRL user makes: import `ULDConfig`/`ULDTrainer` from eurobert_hf instead of
    `SFTConfig`/`SFTTrainer` from trl, and use those names."""
    names = {"SFTConfig": "ULDConfig", "SFTTrainer": "ULDTrainer"}

    def split_import(match: re.Match) -> str:
        indent, imported = match.group(1), [name.strip() for name in match.group(2).split(",")]
        kept = [name for name in imported if name not in names]
        moved = [names[name] for name in imported if name in names]
        lines = [f"{indent}from trl import {', '.join(kept)}"] if kept else []
        return "\n".join(lines + [f"{indent}from eurobert_hf import {', '.join(moved)}"])

    source, imports = re.subn(
        r"^([ \t]*)from trl import ([^\n(]*\bSFT(?:Config|Trainer)\b[^\n(]*)$", split_import, source, flags=re.M
    )
    assert imports, "the installed sft.py no longer imports SFTConfig/SFTTrainer from trl on one line"
    for old, new in names.items():
        source = re.sub(rf"\b{old}\b", new, source)
    return source


SCRIPT_DATA = {
    "prompt_completion": [{"prompt": p, "completion": c} for p, c in zip(PROMPTS, COMPLETIONS)],
    "conversational": [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c.strip()}]}
        for p, c in zip(PROMPTS, COMPLETIONS)
    ],
    "text": [{"text": text} for text in TEXTS],
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(SCRIPT_DATA))
def test_trl_sft_script_trains_after_the_swap(tmp_path, kind):
    with open(importlib.util.find_spec("trl.scripts.sft").origin) as handle:
        script = swap_sft_for_uld(handle.read())
    assert "SFTTrainer" not in script and "ULDTrainer(" in script
    script_path = tmp_path / "uld_sft.py"
    script_path.write_text(script)
    student_path, teacher_path = save_pretrained_pair(str(tmp_path / "models"))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with open(data_dir / "train.jsonl", "w") as handle:
        for row in SCRIPT_DATA[kind]:
            handle.write(json.dumps(row) + "\n")
    output_dir = tmp_path / "out"
    command = [
        sys.executable, str(script_path),
        "--model_name_or_path", student_path,
        "--teacher_model_name_or_path", teacher_path,
        "--dataset_name", str(data_dir),
        "--output_dir", str(output_dir),
        "--max_steps", "2",
        "--per_device_train_batch_size", "2",
        "--logging_steps", "1",
        "--save_strategy", "no",
        "--bf16", "False",
        "--gradient_checkpointing", "False",
        "--use_cpu",
        "--report_to", "none",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.isfile(output_dir / "model.safetensors")
    assert "'uld_loss'" in result.stdout + result.stderr


# ------------------------------------------------------------------------------------------------ every SFT data kind


def _loss_on_first_batch(trainer) -> tuple[torch.Tensor, dict]:
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    trainer.model.eval()
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, dict(batch)), batch


def _student_ce(trainer, batch) -> torch.Tensor:
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).double(), batch["labels"][:, 1:].flatten())


def test_completion_only_loss_false_extends_the_cross_entropy_to_the_prompt(tmp_path):
    losses, ces, counts = [], [], []
    for completion_only_loss in (None, False):
        trainer = ULDTrainer(
            tiny_student(),
            make_config(tmp_path, completion_only_loss=completion_only_loss),
            train_dataset=prompt_completion_dataset(4),
            processing_class=student_tokenizer(),
            **_teacher(),
        )
        loss, batch = _loss_on_first_batch(trainer)
        losses.append(loss.item())
        ces.append(_student_ce(trainer, batch).item())
        counts.append(int((batch["labels"][:, 1:] != -100).sum()))
    assert "completion_mask" in trainer.train_dataset.column_names
    assert trainer.train_dataset[0]["labels"] == trainer.train_dataset[0]["input_ids"]
    # Every token but the first of each row (no logits before it) is predicted.
    assert counts[1] == int(batch["attention_mask"].sum()) - len(batch["labels"]) > counts[0]
    # Same ULD term (the completion); the cross-entropy term covers the prompt too.
    assert losses[1] - losses[0] == pytest.approx(ces[1] - ces[0], rel=1e-4, abs=1e-5)


MULTI_TURN = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello, how can I help?"},
    {"role": "user", "content": "The capital of France?"},
    {"role": "assistant", "content": "Paris."},
]


@pytest.mark.parametrize("assistant_only_loss", [True, False])
def test_every_assistant_turn_is_distilled(tmp_path, assistant_only_loss):
    from tests.test_uld_trainer import reference_loss

    trainer = ULDTrainer(
        tiny_student(),
        make_config(tmp_path, assistant_only_loss=assistant_only_loss),
        train_dataset=Dataset.from_dict({"messages": [MULTI_TURN, MULTI_TURN[2:]]}),
        processing_class=student_tokenizer(),
        **_teacher(),
    )
    loss, batch = _loss_on_first_batch(trainer)
    compared = batch["labels"]
    if not assistant_only_loss:
        compared = compared.masked_fill(batch["completion_mask"] == 0, -100)
    # Two separate assistant turns in the first conversation, on both sides.
    first = (compared[0] != -100).int().tolist()
    assert sum(1 for a, b in zip(first, first[1:]) if (a, b) == (0, 1)) == 2
    with torch.no_grad():
        student_logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        teacher_logits = trainer.teacher_model(
            input_ids=batch["teacher_input_ids"], attention_mask=batch["teacher_attention_mask"]
        ).logits
    _, _, uld = reference_loss(
        student_logits, teacher_logits, compared, batch["teacher_labels"], 1.0, 1.5, True, False
    )
    ce = _student_ce(trainer, batch)
    assert loss.item() == pytest.approx((ce + 1.5 * uld).item(), rel=1e-5)
    trainer.model.train()
    _train_logs(trainer)


def test_each_rows_chat_template_kwargs_reach_the_template():
    student = copy.deepcopy(student_tokenizer())
    student.chat_template = (
        "{% if persona %}[{{ persona }}] {% endif %}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
        "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    )
    dataset = Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": "Hi"}]] * 2,
            "completion": [[{"role": "assistant", "content": "Hello"}]] * 2,
            "chat_template_kwargs": [{"persona": "pirate"}, {"persona": ""}],
        }
    )
    prepared = prepare_uld_dataset(dataset, student, teacher_tokenizer())
    assert student.decode(prepared[0]["input_ids"]) == "[pirate] user: Hi\nassistant: Hello\n"
    assert student.decode(prepared[1]["input_ids"]) == "user: Hi\nassistant: Hello\n"


def test_with_transform_and_streaming_datasets_train(tmp_path):
    raw = Dataset.from_dict({"q": PROMPTS[:4], "a": COMPLETIONS[:4]})
    transformed = raw.with_transform(lambda batch: {"prompt": batch["q"], "completion": batch["a"]})
    for dataset in (transformed, Dataset.from_dict({"text": TEXTS[:4]}).to_iterable_dataset()):
        trainer = ULDTrainer(
            tiny_student(),
            make_config(tmp_path),
            train_dataset=dataset,
            processing_class=student_tokenizer(),
            **_teacher(),
        )
        _train_logs(trainer)


def test_student_only_token_ids_are_refused_with_the_reason(tmp_path):
    dataset = Dataset.from_dict({"input_ids": [[464, 3139, 286]], "labels": [[-100, 3139, 286]]})
    with pytest.raises(ValueError, match="teacher must read the same text"):
        ULDTrainer(
            tiny_student(),
            make_config(tmp_path),
            train_dataset=dataset,
            processing_class=student_tokenizer(),
            **_teacher(),
        )


# ------------------------------------------------------------------------------------------------ no silent settings

# Each of SFTConfig's own fields, and what ULD does with it. A TRL release that adds a field fails
# `test_every_sft_config_field_is_accounted_for` until it is decided here.
SFT_FIELDS = {
    "model_init_kwargs": "works (student; the teacher too unless teacher_model_init_kwargs)",
    "trust_remote_code": "works",
    "router_aux_loss_coef": "works",
    "chat_template_path": "works (student)",
    "dataset_text_field": "works",
    "dataset_kwargs": "works (skip_prepare_dataset is always set: ULD prepares both sides)",
    "dataset_num_proc": "works",
    "eos_token": "works (student)",
    "max_length": "works (each side)",
    "truncation_mode": "refused: keep_end",
    "shuffle_dataset": "works",
    "packing": "refused",
    "packing_strategy": "only with packing",
    "padding_free": "works (student; the teacher stays padded)",
    "pad_to_multiple_of": "works",
    "eval_packing": "refused",
    "completion_only_loss": "works",
    "assistant_only_loss": "works",
    "loss_type": "refused: dft",
    "activation_offloading": "works",
    "pad_token": "works",
}
REFUSED = {
    "truncation_mode": "keep_end",
    "packing": True,
    "eval_packing": True,
    "loss_type": "dft",
}


def test_every_sft_config_field_is_accounted_for():
    import dataclasses

    base = {item.name for item in dataclasses.fields(TrainingArguments)}
    own = {item.name for item in dataclasses.fields(SFTConfig)} - base
    assert own == set(SFT_FIELDS)


@pytest.mark.parametrize(("name", "value"), list(REFUSED.items()))
def test_unsupported_sft_settings_are_refused_when_the_config_is_built(tmp_path, name, value):
    with pytest.raises(ValueError, match=name):
        make_config(tmp_path, **{name: value})


def test_label_smoothing_applies_to_the_cross_entropy_term(tmp_path):
    losses = []
    for factor in (0.0, 0.2):
        trainer = ULDTrainer(
            tiny_student(),
            make_config(tmp_path, label_smoothing_factor=factor),
            train_dataset=prompt_completion_dataset(4),
            processing_class=student_tokenizer(),
            **_teacher(),
        )
        loss, batch = _loss_on_first_batch(trainer)
        losses.append(loss.item())
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    mask = batch["labels"][:, 1:] != -100
    log_probs = logits[:, :-1][mask].double().log_softmax(-1)
    nll = -log_probs.gather(1, batch["labels"][:, 1:][mask][:, None]).mean()
    uniform = -log_probs.mean(dim=-1).mean()
    # (1 - ε)·NLL + ε·(cross-entropy against the uniform distribution), ULD unchanged.
    assert losses[1] - losses[0] == pytest.approx((0.2 * (uniform - nll)).item(), rel=1e-4, abs=1e-6)


def _tiny_moe_student():
    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(
        vocab_size=len(student_tokenizer()),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_local_experts=4,
        num_experts_per_tok=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    return MixtralForCausalLM(config)


def test_moe_router_aux_loss_is_added_as_sft_adds_it(tmp_path):
    trainer = ULDTrainer(
        _tiny_moe_student(),
        make_config(tmp_path, router_aux_loss_coef=0.5),
        train_dataset=prompt_completion_dataset(4),
        processing_class=student_tokenizer(),
        **_teacher(),
    )
    with_aux, batch = _loss_on_first_batch(trainer)
    with torch.no_grad():
        aux = trainer.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_router_logits=True
        ).aux_loss
    trainer.aux_loss_enabled = False
    without_aux, _ = _loss_on_first_batch(trainer)
    assert aux.item() > 0
    assert (with_aux - without_aux).item() == pytest.approx(0.5 * aux.item(), rel=1e-4)
    trainer.aux_loss_enabled = True
    logs = _train_logs(trainer)
    assert all(log["aux_loss"] > 0 for log in logs)


def test_pad_token_and_shuffle_dataset_apply(tmp_path):
    student = copy.deepcopy(student_tokenizer())
    trainer = ULDTrainer(
        tiny_student(),
        make_config(tmp_path, pad_token="!", shuffle_dataset=True, seed=3),
        train_dataset=prompt_completion_dataset(6),
        processing_class=student,
        **_teacher(),
    )
    assert (
        trainer.processing_class.pad_token == "!"
        and trainer.data_collator.pad_token_id == student.convert_tokens_to_ids("!")
    )
    order = [student.decode(row["input_ids"]).split(" ")[0] for row in trainer.train_dataset]
    assert sorted(order) == sorted(prompt.split(" ")[0] for prompt in PROMPTS) and order != [
        p.split(" ")[0] for p in PROMPTS
    ]


# ------------------------------------------------------------------------------------------------------- SFT metrics


def test_sft_metrics_are_logged_in_train_and_eval(tmp_path):
    trainer = ULDTrainer(
        tiny_student(),
        make_config(tmp_path, eval_strategy="steps", eval_steps=2),
        train_dataset=prompt_completion_dataset(4),
        eval_dataset=prompt_completion_dataset(2),
        processing_class=student_tokenizer(),
        **_teacher(),
    )
    logs = _train_logs(trainer)
    eval_logs = [log for log in trainer.state.log_history if "eval_loss" in log]
    vocab = len(student_tokenizer())
    for log, prefix in [(log, "") for log in logs] + [(log, "eval_") for log in eval_logs]:
        assert 0.0 <= log[f"{prefix}mean_token_accuracy"] <= 1.0
        assert 0.0 < log[f"{prefix}entropy"] <= math.log(vocab) + 1e-4
    # Every student token of the 4 training samples, once each over the 2 steps.
    assert logs[-1]["num_tokens"] == sum(len(row["input_ids"]) for row in trainer.train_dataset)
    assert eval_logs[-1]["eval_num_tokens"] == logs[-1]["num_tokens"]

    # The eval numbers against a direct computation on the one eval batch.
    batch = trainer.data_collator([trainer.eval_dataset[i] for i in range(2)])
    trainer.model.eval()
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    mask = batch["labels"][:, 1:] != -100
    predicted = logits[:, :-1][mask].double()
    accuracy = (predicted.argmax(-1) == batch["labels"][:, 1:][mask]).double().mean()
    entropy = -(predicted.softmax(-1) * predicted.log_softmax(-1)).sum(-1).mean()
    metrics = trainer.evaluate()
    assert metrics["eval_mean_token_accuracy"] == pytest.approx(accuracy.item(), abs=1e-9)
    assert metrics["eval_entropy"] == pytest.approx(entropy.item(), rel=1e-5)


def test_metric_for_best_model_can_be_an_sft_metric(tmp_path):
    trainer = ULDTrainer(
        tiny_student(),
        make_config(
            tmp_path,
            eval_strategy="steps",
            eval_steps=1,
            save_strategy="steps",
            save_steps=1,
            metric_for_best_model="eval_mean_token_accuracy",
            greater_is_better=True,
            load_best_model_at_end=True,
        ),
        train_dataset=prompt_completion_dataset(4),
        eval_dataset=prompt_completion_dataset(2),
        processing_class=student_tokenizer(),
        **_teacher(),
    )
    trainer.train()
    assert trainer.state.best_metric is not None and trainer.state.best_model_checkpoint is not None


# ------------------------------------------------------------------------------------------------------------- PEFT


def _peft_configs():
    from peft import LoraConfig, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig

    return {
        "lora": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
        "prefix_tuning": PrefixTuningConfig(num_virtual_tokens=3, task_type="CAUSAL_LM"),
        "prompt_tuning": PromptTuningConfig(num_virtual_tokens=3, task_type="CAUSAL_LM"),
        "p_tuning": PromptEncoderConfig(num_virtual_tokens=3, encoder_hidden_size=16, task_type="CAUSAL_LM"),
    }


@pytest.mark.parametrize("kind", ["lora", "prefix_tuning", "prompt_tuning", "p_tuning"])
def test_peft_students_train_with_the_masks_shifted_past_virtual_tokens(tmp_path, kind):
    trainer = ULDTrainer(
        tiny_student(),
        make_config(tmp_path),
        train_dataset=prompt_completion_dataset(4),
        eval_dataset=prompt_completion_dataset(2),
        processing_class=student_tokenizer(),
        peft_config=_peft_configs()[kind],
        **_teacher(),
    )
    # The cross-entropy term against PEFT's own loss on the same batch (which drops the virtual tokens' positions).
    batch = trainer.data_collator([trainer.eval_dataset[i] for i in range(2)])
    metrics = trainer.evaluate()
    with torch.no_grad():
        own = trainer.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        )
    assert metrics["eval_ce_loss"] == pytest.approx(own.loss.item(), rel=1e-5)
    trainable = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    _train_logs(trainer)
    assert any(not torch.equal(trainable[name], p) for name, p in trainer.model.named_parameters() if p.requires_grad)


def test_padding_free_with_virtual_tokens_is_refused(tmp_path):
    with pytest.raises(ValueError, match="prompt-learning"):
        ULDTrainer(
            tiny_student(),
            make_config(tmp_path, padding_free=True),
            train_dataset=prompt_completion_dataset(2),
            processing_class=student_tokenizer(),
            peft_config=_peft_configs()["prompt_tuning"],
            **_teacher(),
        )


# ------------------------------------------------------------------------------------------------- alignment health


def _predicted_count(labels: list[int]) -> int:
    return sum(1 for label in labels[1:] if label != -100)


def test_alignment_health_is_logged_per_logging_step(tmp_path):
    trainer = ULDTrainer(
        tiny_student(),
        make_config(tmp_path, per_device_train_batch_size=4, max_steps=1),
        train_dataset=prompt_completion_dataset(4),
        processing_class=student_tokenizer(),
        **_teacher(),
    )
    (log,) = _train_logs(trainer)
    student = [_predicted_count(row["labels"]) for row in trainer.train_dataset]
    teacher = [_predicted_count(row["teacher_labels"]) for row in trainer.train_dataset]
    # Positional: the student's EOS skipped, the longer side truncated.
    aligned = sum(min(s - 1, t) for s, t in zip(student, teacher))
    assert log["aligned_share_student"] == pytest.approx(aligned / sum(student))
    assert log["aligned_share_teacher"] == pytest.approx(aligned / sum(teacher))
    assert log["length_mismatch"] == pytest.approx(sum(abs(s - t) for s, t in zip(student, teacher)) / 4)
    assert "teacher_topk_mass" not in log


def test_alignment_health_with_offsets_and_a_top_k_cache(tmp_path):
    from eurobert_hf.trainers.teacher_cache import cache_teacher_probs

    overrides = {"uld_alignment": "offsets", "uld_top_k": 8, "per_device_train_batch_size": 4, "max_steps": 1}
    # Roles swapped, so that the cached teacher vocabulary (GPT-2's) stays small.
    prepared = prepare_uld_dataset(
        prompt_completion_dataset(4), teacher_tokenizer(), student_tokenizer(), alignment="offsets"
    )
    cached = cache_teacher_probs(tiny_student(), prepared, top_k=8)
    trainer = ULDTrainer(
        tiny_teacher(), make_config(tmp_path, **overrides), train_dataset=cached, processing_class=teacher_tokenizer()
    )
    (log,) = _train_logs(trainer)
    assert 0.5 < log["aligned_share_student"] <= 1.0 and 0.5 < log["aligned_share_teacher"] <= 1.0
    kept = [1 - mass for row in cached for mass in row["teacher_remaining_mass"]]
    assert log["teacher_topk_mass"] == pytest.approx(sum(kept) / len(kept), rel=1e-5)
