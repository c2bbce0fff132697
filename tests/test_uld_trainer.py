"""ULDConfig, ULD dataset preparation and ULDTrainer, on tiny models over two real, different tokenizers."""

import copy
import json
import logging
import math
import os
import subprocess
import sys

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig

from eurobert_hf.trainers import ULDConfig, ULDTrainer
from eurobert_hf.trainers.teacher_cache import cache_teacher_probs
from eurobert_hf.trainers.uld_data import ULDDataCollator, prepare_uld_dataset, tokenize_prompt_completion
from tests.uld_fixtures import (
    chat_teacher_tokenizer,
    conversational_dataset,
    prompt_completion_dataset,
    save_pretrained_pair,
    student_tokenizer,
    teacher_tokenizer,
    tiny_student,
    tiny_teacher,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_config(output_dir, **overrides) -> ULDConfig:
    values = {
        "bf16": False,
        "report_to": "none",
        "gradient_checkpointing": False,
        "use_cpu": True,
        "per_device_train_batch_size": 2,
        "per_device_eval_batch_size": 2,
        "max_steps": 2,
        "logging_steps": 1,
        "save_strategy": "no",
        "learning_rate": 1e-2,
        "seed": 0,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    values.update(overrides)
    return ULDConfig(str(output_dir), **values)


def make_trainer(output_dir, train_dataset=None, eval_dataset=None, student=None, teacher=None, **overrides):
    return ULDTrainer(
        model=student if student is not None else tiny_student(),
        teacher_model=teacher if teacher is not None else tiny_teacher(),
        args=make_config(output_dir, **overrides),
        train_dataset=train_dataset if train_dataset is not None else prompt_completion_dataset(),
        eval_dataset=eval_dataset,
        processing_class=student_tokenizer(),
        teacher_processing_class=teacher_tokenizer(),
    )


# ----------------------------------------------------------------------------------------------------------- config


def test_public_names_are_exported_lazily():
    import eurobert_hf
    import eurobert_hf.trainers

    assert eurobert_hf.ULDConfig is ULDConfig and eurobert_hf.ULDTrainer is ULDTrainer
    assert {"ULDConfig", "ULDTrainer", "uld_loss"} <= set(eurobert_hf.trainers.__all__)
    # The loss module is imported by now; the name still gives the function, not the module.
    from eurobert_hf.trainers import uld_loss, uld_losses

    assert callable(uld_loss) and uld_loss is uld_losses.uld_loss is eurobert_hf.uld_loss


def test_config_defaults_follow_the_paper(tmp_path):
    args = make_config(tmp_path)
    assert args.uld_crossentropy_weight == 1.0
    assert args.uld_distillation_weight == 1.5
    assert (args.uld_student_temperature, args.uld_teacher_temperature) == (1.0, 1.0)
    assert args.uld_skip_student_eos is True and args.uld_skip_teacher_eos is False
    assert args.uld_alignment == "positional" and args.uld_top_k is None
    assert args.dataset_kwargs["skip_prepare_dataset"] is True


def test_config_parses_teacher_init_kwargs_from_json(tmp_path):
    args = make_config(tmp_path, teacher_model_init_kwargs='{"dtype": "float32"}')
    assert args.teacher_model_init_kwargs == {"dtype": "float32"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"uld_distillation_weight": -1.0}, "uld_distillation_weight"),
        ({"uld_crossentropy_weight": 0.0, "uld_distillation_weight": 0.0}, "nothing to train"),
        ({"uld_student_temperature": 0.0}, "uld_student_temperature"),
        ({"uld_teacher_temperature": -2.0}, "uld_teacher_temperature"),
        ({"uld_alignment": "bytes"}, "uld_alignment"),
        ({"uld_top_k": 0}, "uld_top_k"),
        ({"uld_alignment": "offsets"}, "set `uld_top_k`"),
        ({"packing": True}, "Packing"),
        ({"padding_free": True, "pad_to_multiple_of": 8}, "padding_free"),
        ({"max_length": 1}, "max_length"),
    ],
)
def test_config_rejects_bad_values(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config(tmp_path, **overrides)


# ---------------------------------------------------------------------------------------------------------- dataset


def test_plain_prompt_completion_is_tokenized_for_each_model():
    dataset = prepare_uld_dataset(prompt_completion_dataset(2), student_tokenizer(), teacher_tokenizer())
    for side, tokenizer in (("", student_tokenizer()), ("teacher_", teacher_tokenizer())):
        sample = dataset[0]
        input_ids, labels = sample[f"{side}input_ids"], sample[f"{side}labels"]
        # Whether the tokenizer adds its BOS token depends on the transformers version, not on ULD.
        text = tokenizer.decode(input_ids).removeprefix(tokenizer.bos_token)
        assert text == "The capital of France is Paris." + tokenizer.eos_token
        completion = [token for token in labels if token != -100]
        assert tokenizer.decode(completion) == " Paris." + tokenizer.eos_token
        assert labels[: len(labels) - len(completion)] == [-100] * (len(labels) - len(completion))


def test_teacher_reads_the_prompt_in_its_own_chat_template():
    teacher_tok = chat_teacher_tokenizer()
    dataset = prepare_uld_dataset(conversational_dataset(1), student_tokenizer(), teacher_tok)
    sample = dataset[0]
    expected_teacher = (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nThe capital of France is<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n Paris.<|eot_id|>"
    )
    assert teacher_tok.decode(sample["teacher_input_ids"]) == expected_teacher
    teacher_completion = [token for token in sample["teacher_labels"] if token != -100]
    assert teacher_tok.decode(teacher_completion) == " Paris.<|eot_id|>"
    # The student has no chat template: it reads the plain rendering.
    assert student_tokenizer().decode(sample["input_ids"]) == "The capital of France is\n\n Paris.<|endoftext|>"


MULTI_TURN = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "Thanks"},
]


def _learnt_text(tokenizer, input_ids, labels) -> list[str]:
    """The learnt runs of tokens, decoded."""
    runs, run = [], []
    for token, label in zip(input_ids, labels):
        if label != -100:
            run.append(token)
        elif run:
            runs, run = runs + [tokenizer.decode(run)], []
    return runs + ([tokenizer.decode(run)] if run else [])


def test_messages_every_assistant_turn_is_learnt_on_both_sides():
    teacher_tok = chat_teacher_tokenizer()
    dataset = Dataset.from_dict({"messages": [MULTI_TURN]})
    sample = prepare_uld_dataset(dataset, student_tokenizer(), teacher_tok, assistant_only_loss=True)[0]
    assert "completion_mask" not in sample
    assert _learnt_text(teacher_tok, sample["teacher_input_ids"], sample["teacher_labels"]) == [
        "Hello!<|eot_id|>",
        "Paris.<|eot_id|>",
    ]
    # The student has no chat template: contents separated by blank lines. GPT-2 merges a blank line with the text
    # after it differently, so a turn's first token may carry the blank line before it.
    student_runs = _learnt_text(student_tokenizer(), sample["input_ids"], sample["labels"])
    assert [run.strip() for run in student_runs] == ["Hello!", "Paris.<|endoftext|>"]
    # The trailing user turn teaches nothing and is left out.
    assert "Thanks" not in teacher_tok.decode(sample["teacher_input_ids"])


def test_messages_train_the_students_cross_entropy_on_the_whole_conversation_by_default():
    dataset = Dataset.from_dict({"messages": [MULTI_TURN]})
    only = prepare_uld_dataset(dataset, student_tokenizer(), chat_teacher_tokenizer(), assistant_only_loss=True)[0]
    every = prepare_uld_dataset(dataset, student_tokenizer(), chat_teacher_tokenizer())[0]
    assert every["labels"] == every["input_ids"] == only["input_ids"]
    # ULD compares the same tokens either way.
    assert [label if keep else -100 for label, keep in zip(every["labels"], every["completion_mask"])] == only[
        "labels"
    ]
    assert every["teacher_labels"] == only["teacher_labels"]


def test_messages_without_assistant_turn_is_an_error():
    dataset = Dataset.from_dict({"messages": [[{"role": "user", "content": "Hi"}]]})
    with pytest.raises(ValueError, match="no assistant turn"):
        prepare_uld_dataset(dataset, student_tokenizer(), teacher_tokenizer())


def test_truncation_drops_prompt_from_the_left_and_keeps_the_completion():
    tokenizer = student_tokenizer()
    prompt = "one two three four five six seven eight nine ten eleven twelve"
    full_ids, full_labels = tokenize_prompt_completion(tokenizer, prompt, " Paris.")
    input_ids, labels = tokenize_prompt_completion(tokenizer, prompt, " Paris.", max_length=6)
    assert len(input_ids) == 6
    assert input_ids == full_ids[-6:] and labels == full_labels[-6:]
    assert tokenizer.decode([t for t in labels if t != -100]) == " Paris.<|endoftext|>"
    # A completion longer than max_length keeps its start, after one prompt token that predicts it.
    input_ids, labels = tokenize_prompt_completion(tokenizer, prompt, " a b c d e f g h", max_length=4)
    assert labels[0] == -100 and tokenizer.decode(labels[1:]) == " a b c"


def test_completion_truncated_away_leaves_no_sample():
    with pytest.raises(ValueError, match="no completion token is left"):
        prepare_uld_dataset(prompt_completion_dataset(2), student_tokenizer(), teacher_tokenizer(), max_length=1)


def test_empty_completion_is_dropped_with_a_warning(caplog):
    dataset = Dataset.from_dict({"prompt": ["A", "B", "C"], "completion": [" x", "", "   "]})
    with caplog.at_level(logging.WARNING):
        prepared = prepare_uld_dataset(dataset, student_tokenizer(), teacher_tokenizer())
    assert len(prepared) == 1
    assert "Dropped 2 of 3" in caplog.text and "empty" in caplog.text


def test_only_empty_completions_is_an_error():
    dataset = Dataset.from_dict({"prompt": ["A"], "completion": [""]})
    with pytest.raises(ValueError, match="completion is empty"):
        prepare_uld_dataset(dataset, student_tokenizer(), teacher_tokenizer())


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"content": ["hello"]}, "needs `prompt` and `completion` columns"),
        ({"prompt": ["hello"]}, "no `completion` column"),
        ({"input_ids": [[1, 2]], "labels": [[-100, 2]]}, "teacher_input_ids"),
    ],
)
def test_missing_columns_are_reported(columns, message):
    with pytest.raises(ValueError, match=message):
        prepare_uld_dataset(Dataset.from_dict(columns), student_tokenizer(), teacher_tokenizer())


def test_collator_pads_each_side_with_its_own_token():
    collator = ULDDataCollator(pad_token_id=7, teacher_pad_token_id=9)
    batch = collator(
        [
            {"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "teacher_input_ids": [4], "teacher_labels": [4]},
            {"input_ids": [5], "labels": [5], "teacher_input_ids": [6, 6], "teacher_labels": [-100, 6]},
        ]
    )
    assert batch["input_ids"].tolist() == [[1, 2, 3], [5, 7, 7]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [5, -100, -100]]
    assert batch["teacher_input_ids"].tolist() == [[4, 9], [6, 6]]
    assert batch["teacher_labels"].tolist() == [[4, -100], [-100, 6]]


def test_offsets_alignment_adds_one_group_per_predicted_completion_token():
    dataset = prepare_uld_dataset(
        prompt_completion_dataset(4), student_tokenizer(), teacher_tokenizer(), alignment="offsets"
    )
    for sample in dataset:
        for side in ("", "teacher_"):
            predicted = [label for label in sample[f"{side}labels"][1:] if label != -100]
            groups = sample[f"{side}uld_groups"]
            assert len(groups) == len(predicted)
            assert max(groups) >= 0 and groups == sorted(groups, key=lambda group: (group < 0, group))
        # Both sides cover the same completion text, so they have the same groups.
        assert {g for g in sample["uld_groups"] if g >= 0} == {g for g in sample["teacher_uld_groups"] if g >= 0}


# ---------------------------------------------------------------------------------------------------------- trainer


def reference_loss(student_logits, teacher_logits, labels, teacher_labels, ce_weight, uld_weight, skip_s, skip_t):
    """CE over all completion tokens + λ · ULD averaged over all aligned tokens, with loops, in float64."""
    ce_terms, uld_terms = [], []
    for b in range(labels.shape[0]):
        s_positions = [t - 1 for t in range(1, labels.shape[1]) if labels[b, t] != -100]
        t_positions = [t - 1 for t in range(1, teacher_labels.shape[1]) if teacher_labels[b, t] != -100]
        for position in s_positions:
            log_probs = torch.log_softmax(student_logits[b, position].double(), dim=-1)
            ce_terms.append(-log_probs[labels[b, position + 1]])
        s_positions = s_positions[: len(s_positions) - skip_s]
        t_positions = t_positions[: len(t_positions) - skip_t]
        for s_position, t_position in zip(s_positions, t_positions):
            p = torch.softmax(student_logits[b, s_position].double(), -1).sort(descending=True).values
            q = torch.softmax(teacher_logits[b, t_position].double(), -1).sort(descending=True).values
            size = max(len(p), len(q))
            p = torch.nn.functional.pad(p, (0, size - len(p)))
            q = torch.nn.functional.pad(q, (0, size - len(q)))
            uld_terms.append((p - q).abs().sum())
    ce = torch.stack(ce_terms).mean()
    uld = torch.stack(uld_terms).mean()
    return ce_weight * ce + uld_weight * uld, ce, uld


@pytest.mark.parametrize("skip", [(True, False), (False, True)])
def test_loss_equals_a_float64_reference(tmp_path, skip):
    trainer = make_trainer(tmp_path, uld_skip_student_eos=skip[0], uld_skip_teacher_eos=skip[1])
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch))
        student_logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        teacher_logits = trainer.teacher_model(
            input_ids=batch["teacher_input_ids"], attention_mask=batch["teacher_attention_mask"]
        ).logits
    expected, ce, uld = reference_loss(
        student_logits, teacher_logits, batch["labels"], batch["teacher_labels"], 1.0, 1.5, *skip
    )
    assert uld > 0.1  # different tokenizers and random models: the distillation term is far from 0
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_training_logs_both_terms_writes_checkpoint_and_card(tmp_path):
    student = tiny_student()
    before = {name: param.detach().clone() for name, param in student.named_parameters()}
    trainer = make_trainer(
        tmp_path,
        eval_dataset=conversational_dataset(),
        student=student,
        max_steps=2,
        save_strategy="steps",
        save_steps=2,
        eval_strategy="steps",
        eval_steps=2,
    )
    trainer.train()

    train_logs = [log for log in trainer.state.log_history if "loss" in log]
    eval_logs = [log for log in trainer.state.log_history if "eval_loss" in log]
    assert len(train_logs) == 2 and eval_logs
    for log in train_logs:
        assert math.isfinite(log["loss"]) and log["ce_loss"] > 0 and log["uld_loss"] > 0
        # One micro-batch per step, logged every step: the logged loss is exactly the weighted sum of the terms.
        assert log["loss"] == pytest.approx(log["ce_loss"] + 1.5 * log["uld_loss"], rel=1e-5)
    for log in eval_logs:
        assert log["eval_loss"] == pytest.approx(log["eval_ce_loss"] + 1.5 * log["eval_uld_loss"], rel=1e-5)
    assert any(not torch.equal(before[name], param) for name, param in trainer.model.named_parameters())

    assert os.path.isfile(tmp_path / "checkpoint-2" / "model.safetensors")
    card = (tmp_path / "README.md").read_text()
    assert "uld_distillation_weight: 1.5" in card and "uld_skip_student_eos: True" in card
    assert "2402.12030" in card
    assert "uld" in trainer.model.model_tags and "distillation" in trainer.model.model_tags


def test_evaluate_prepares_a_raw_dataset_and_reports_both_terms(tmp_path):
    trainer = make_trainer(tmp_path)
    metrics = trainer.evaluate(conversational_dataset())
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_ce_loss"] + 1.5 * metrics["eval_uld_loss"], rel=1e-5)


def _one_sgd_step(output_dir, batch_size, accumulation, **overrides):
    # float64, so that the comparison sees the normalisation and not float32 rounding of the parameter updates.
    trainer = make_trainer(
        output_dir,
        student=tiny_student(dtype=torch.float64),
        teacher=tiny_teacher(dtype=torch.float64),
        train_dataset=prompt_completion_dataset(4),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        optim="sgd",
        learning_rate=1.0,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        **overrides,
    )
    before = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}
    trainer.train()
    updates = {name: before[name] - param.detach() for name, param in trainer.model.named_parameters()}
    return trainer.state.log_history[0], updates


# The tiny random models are nearly uniform; low temperatures make the top-k vectors of offsets alignment differ.
OFFSETS = {
    "uld_alignment": "offsets",
    "uld_top_k": 16,
    "uld_student_temperature": 0.02,
    "uld_teacher_temperature": 0.02,
}


@pytest.mark.parametrize("alignment", [{}, OFFSETS], ids=["positional", "offsets"])
def test_gradient_accumulation_does_not_change_loss_or_gradients(tmp_path, alignment):
    log_full, updates_full = _one_sgd_step(tmp_path / "a", batch_size=4, accumulation=1, **alignment)
    log_split, updates_split = _one_sgd_step(tmp_path / "b", batch_size=2, accumulation=2, **alignment)
    assert log_full["uld_loss"] > 0.1
    for key in ("loss", "ce_loss", "uld_loss"):
        assert log_split[key] == pytest.approx(log_full[key], rel=1e-6)
    for name, update in updates_full.items():
        scale = update.abs().max().item()
        assert scale > 0, name
        assert (updates_split[name] - update).abs().max().item() <= 1e-6 * scale, name


@pytest.mark.parametrize(
    "overrides", [{}, OFFSETS, {"completion_only_loss": False}], ids=["positional", "offsets", "completion_mask"]
)
def test_padding_free_gives_the_padded_loss_and_gradients(tmp_path, overrides):
    log_padded, updates_padded = _one_sgd_step(tmp_path / "a", batch_size=4, accumulation=1, **overrides)
    log_free, updates_free = _one_sgd_step(
        tmp_path / "b", batch_size=4, accumulation=1, padding_free=True, **overrides
    )
    assert log_padded["uld_loss"] > 0.1
    for key in ("loss", "ce_loss", "uld_loss", "mean_token_accuracy", "num_tokens"):
        assert log_free[key] == pytest.approx(log_padded[key], rel=1e-6), key
    for name, update in updates_padded.items():
        scale = update.abs().max().item()
        assert scale > 0, name
        assert (updates_free[name] - update).abs().max().item() <= 1e-6 * scale, name


def test_padding_free_batches_concatenate_the_students_samples():
    collator = ULDDataCollator(pad_token_id=7, teacher_pad_token_id=9, padding_free=True)
    batch = collator(
        [
            {"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "teacher_input_ids": [4], "teacher_labels": [4]},
            {"input_ids": [5, 6], "labels": [5, 6], "teacher_input_ids": [6, 6], "teacher_labels": [-100, 6]},
        ]
    )
    assert "attention_mask" not in batch
    assert batch["input_ids"].tolist() == [[1, 2, 3, 5, 6]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    # The first token of a sample is never predicted: the logits before it belong to the previous sample.
    assert batch["labels"].tolist() == [[-100, 2, 3, -100, 6]]
    assert batch["teacher_input_ids"].tolist() == [[4, 9], [6, 6]]


def test_training_on_a_complete_teacher_cache_matches_the_live_teacher(tmp_path):
    # Roles swapped, so that the cached teacher vocabulary (GPT-2's 50257 tokens) stays small.
    prepared = prepare_uld_dataset(prompt_completion_dataset(4), teacher_tokenizer(), student_tokenizer())
    cached = cache_teacher_probs(tiny_student(), prepared, top_k=None)
    histories = []
    for teacher, dataset in ((tiny_student(), prepared), (None, cached)):
        trainer = ULDTrainer(
            model=tiny_teacher(),
            teacher_model=teacher,
            args=make_config(tmp_path / str(len(histories)), max_steps=2),
            train_dataset=dataset,
            processing_class=teacher_tokenizer(),
            teacher_processing_class=student_tokenizer() if teacher is not None else None,
        )
        trainer.train()
        histories.append([log for log in trainer.state.log_history if "loss" in log])
    assert trainer.teacher_model is None
    for live, from_cache in zip(*histories):
        for key in ("loss", "ce_loss", "uld_loss"):
            assert from_cache[key] == pytest.approx(live[key], rel=1e-5)


def test_cache_built_with_another_temperature_is_refused(tmp_path):
    prepared = prepare_uld_dataset(prompt_completion_dataset(2), teacher_tokenizer(), student_tokenizer())
    cached = cache_teacher_probs(tiny_student(), prepared, top_k=None, teacher_temperature=2.0)
    with pytest.raises(ValueError, match="teacher_temperature"):
        ULDTrainer(
            model=tiny_teacher(),
            args=make_config(tmp_path),
            train_dataset=cached,
            processing_class=teacher_tokenizer(),
        )


def test_streaming_dataset_trains(tmp_path):
    dataset = prompt_completion_dataset(4).to_iterable_dataset()
    trainer = make_trainer(tmp_path, train_dataset=dataset, max_steps=2)
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(logs) == 2 and all(math.isfinite(log["loss"]) and log["uld_loss"] > 0 for log in logs)


def test_teacher_tokenizer_without_pad_token_is_handled(tmp_path):
    # Roles swapped, so that the tokenizer to strip of its padding token is the cheap one to copy.
    teacher_tok = copy.deepcopy(student_tokenizer())
    teacher_tok.pad_token = None
    trainer = ULDTrainer(
        model=tiny_teacher(),
        teacher_model=tiny_student(),
        args=make_config(tmp_path),
        train_dataset=prompt_completion_dataset(),
        processing_class=teacher_tokenizer(),
        teacher_processing_class=teacher_tok,
    )
    assert trainer.teacher_processing_class.pad_token is None
    trainer.train()
    assert all(math.isfinite(log["loss"]) for log in trainer.state.log_history if "loss" in log)


def test_lora_student_trains_adapters_only(tmp_path):
    trainer = ULDTrainer(
        model=tiny_student(),
        teacher_model=tiny_teacher(),
        args=make_config(tmp_path),
        train_dataset=prompt_completion_dataset(),
        processing_class=student_tokenizer(),
        teacher_processing_class=teacher_tokenizer(),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )
    params = dict(trainer.model.named_parameters())
    before = {name: param.detach().clone() for name, param in params.items()}
    trainer.train()
    changed = {name for name, param in params.items() if not torch.equal(before[name], param.detach())}
    assert changed and all("lora_B" in name or "lora_A" in name for name in changed)
    assert all(math.isfinite(log["loss"]) for log in trainer.state.log_history if "loss" in log)


def test_models_and_tokenizers_load_from_paths(tmp_path):
    student_path, teacher_path = save_pretrained_pair(str(tmp_path / "models"))
    args = make_config(tmp_path / "out", max_steps=1, teacher_model_name_or_path=teacher_path)
    trainer = ULDTrainer(model=student_path, args=args, train_dataset=prompt_completion_dataset())
    assert len(trainer.teacher_processing_class) == len(teacher_tokenizer())
    assert trainer.teacher_model.config.vocab_size == len(teacher_tokenizer())
    assert not any(param.requires_grad for param in trainer.teacher_model.parameters())
    assert not trainer.teacher_model.training
    trainer.train()
    trainer.create_model_card()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| Teacher | `teacher` |" in card and "/models/" not in card


def test_bad_trainer_inputs_are_reported(tmp_path):
    with pytest.raises(ValueError, match="no complete teacher cache"):
        ULDTrainer(
            tiny_student(),
            args=make_config(tmp_path),
            train_dataset=prompt_completion_dataset(),
            processing_class=student_tokenizer(),
        )
    with pytest.raises(ValueError, match="pass `processing_class`"):
        ULDTrainer(
            tiny_student(),
            make_config(tmp_path),
            train_dataset=prompt_completion_dataset(),
            teacher_model=tiny_teacher(),
            teacher_processing_class=teacher_tokenizer(),
        )
    with pytest.raises(ValueError, match="pass `teacher_processing_class`"):
        ULDTrainer(
            tiny_student(),
            make_config(tmp_path),
            train_dataset=prompt_completion_dataset(),
            processing_class=student_tokenizer(),
            teacher_model=tiny_teacher(),
        )
    # The second positional argument is `args`, as in SFTTrainer: a teacher there is named as the mistake.
    with pytest.raises(TypeError, match="teacher_model="):
        ULDTrainer(tiny_student(), tiny_teacher(), train_dataset=prompt_completion_dataset())
    # A teacher tokenizer that does not belong to the teacher (more tokens than its vocabulary).
    with pytest.raises(ValueError, match="do not belong together"):
        make_trainer(tmp_path, teacher=tiny_student(seed=3))
    with pytest.raises(ValueError, match="needs `prompt` and `completion` columns"):
        make_trainer(tmp_path, train_dataset=Dataset.from_dict({"content": ["a", "b"]}))


# ---------------------------------------------------------------------------------------------------------- example


@pytest.mark.slow
def test_example_script_runs_offline(tmp_path):
    student_path, teacher_path = save_pretrained_pair(str(tmp_path / "models"))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with open(data_dir / "train.jsonl", "w") as handle:
        for row in prompt_completion_dataset(4):
            handle.write(json.dumps(row) + "\n")
    output_dir = tmp_path / "out"
    command = [
        sys.executable,
        os.path.join(REPO_ROOT, "examples", "uld.py"),
        "--model_name_or_path",
        student_path,
        "--teacher_model_name_or_path",
        teacher_path,
        "--dataset_name",
        str(data_dir),
        "--output_dir",
        str(output_dir),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--bf16",
        "False",
        "--gradient_checkpointing",
        "False",
        "--use_cpu",
        "--report_to",
        "none",
        "--dtype",
        "float32",
    ]
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.isfile(output_dir / "model.safetensors")
    assert "uld_distillation_weight" in (output_dir / "README.md").read_text()


def test_saved_student_names_no_code_outside_its_folder(tmp_path):
    """A student loaded with `auto_map` entries into another repository (as Hub-era checkpoints carry) is saved by the
    Trainer's own `save_model` without them, so `trust_remote_code=True` never runs that repository's code."""
    foreign = {"AutoTokenizer": ["other/repo--tokenization_x.TokX", None]}
    tokenizer = student_tokenizer()
    tokenizer.init_kwargs["auto_map"] = foreign
    student = tiny_student()
    student.config.auto_map = {"AutoModelForCausalLM": "other/repo--modeling_x.ModelX"}
    trainer = ULDTrainer(
        student,
        make_config(tmp_path / "out", max_steps=1),
        train_dataset=prompt_completion_dataset(),
        processing_class=tokenizer,
        teacher_model=tiny_teacher(),
        teacher_processing_class=teacher_tokenizer(),
    )
    trainer.save_model(str(tmp_path / "saved"))
    for name in ("config.json", "tokenizer_config.json"):
        with open(tmp_path / "saved" / name) as handle:
            assert "other/repo" not in handle.read(), name
