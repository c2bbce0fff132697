"""`eurobert-hf distill`: Universal Logit Distillation of a causal LM from a teacher with another tokenizer.

Any pair of causal LMs (local folders or Hub names). The data are prompt–completion pairs or `messages`
conversations, from local JSON/JSONL/CSV/Parquet files or a `datasets` dataset. With `--generate_teacher_answers` the
teacher first answers the prompts greedily (the ULD paper's protocol): through its chat template when it has one,
else after a few solved examples (`--few_shot_language`), and the student is trained on those answers. With
`--teacher_cache` the teacher runs once over the data and is not held in memory while the student trains. On held-out
data the command reports the losses and the student's greedy answers' ROUGE-L and token-F1 (the paper's metrics).
"""

import gc
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from huggingface_hub import ModelCard
from transformers import (
    MODEL_FOR_CAUSAL_LM_MAPPING,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from trl import ModelConfig, get_peft_config

from ..metrics import RougeL, TokenF1
from ..trainers import ULDConfig, ULDTrainer
from ..trainers.teacher_cache import cache_teacher_probs
from ..trainers.uld_data import _message_text, prepare_uld_dataset_for  # as ULD training renders chat without template
from ..trainers.uld_trainer import load_teacher_model
from .common import (
    CommandError,
    DataArguments,
    check_output_dir,
    finish,
    load_model_config,
    load_splits,
    load_tokenizer,
    metric_rows,
    note,
    parse_arguments,
    push_output,
    resolve_resume,
    train,
    write_output_folder,
)
from .validation import check_rows, list_of, location, non_empty_text_value, shown, text_value

# Without a GPU, SFTConfig's bf16 and gradient-checkpointing defaults only slow training down (or fail); a config
# file or flags override these.
CPU_DEFAULTS = {"bf16": False, "gradient_checkpointing": False}


@dataclass
class DistillArguments:
    """Data columns, the optional teacher-answer generation and teacher cache, and the held-out generation metrics."""

    prompt_column: str = field(default="prompt", metadata={"help": "The prompt column (text or chat messages)."})
    completion_column: str = field(
        default="completion", metadata={"help": "The completion column (text or chat messages)."}
    )
    messages_column: str = field(
        default="messages",
        metadata={"help": "A conversation column used when there is no prompt column; its last turn is the answer."},
    )
    generate_teacher_answers: bool = field(
        default=False,
        metadata={
            "help": "Replace the completions by the teacher's greedy answers to the prompts before training (the "
            "paper's protocol): through the teacher's chat template, or few-shot for a teacher without one."
        },
    )
    few_shot_language: str = field(
        default="en",
        metadata={"help": "Language of the few-shot examples shown to a teacher without chat template."},
    )
    max_new_tokens: int = field(default=64, metadata={"help": "Longest generated answer, in tokens."})
    generation_batch_size: int = field(default=8, metadata={"help": "Prompts per generation (and caching) batch."})
    teacher_cache: bool = field(
        default=False,
        metadata={
            "help": "Run the teacher once over the data, keep its sorted probabilities (`--uld_top_k` of them, or "
            "all), and train without the teacher in memory."
        },
    )
    eval_generation: bool = field(
        default=True,
        metadata={"help": "On held-out data, also score the student's greedy answers (ROUGE-L, token-F1)."},
    )


def _normalise_columns(dataset: Dataset | None, args: DistillArguments, need_completion: bool) -> Dataset | None:
    """Renames the user's columns to TRL's `prompt`/`completion` (or `messages`) and drops the others."""
    if dataset is None:
        return None
    columns = dataset.column_names
    if args.prompt_column in columns and (args.completion_column in columns or not need_completion):
        renames = {args.prompt_column: "prompt"}
        if args.completion_column in columns:
            renames[args.completion_column] = "completion"
    elif args.messages_column in columns:
        renames = {args.messages_column: "messages"}
    else:
        wanted = f"`{args.prompt_column}`" + (f" and `{args.completion_column}`" if need_completion else "")
        raise CommandError(
            f"The data has the columns {columns}, but distillation needs {wanted} columns or a "
            f"`{args.messages_column}` column. Name yours with `--prompt_column`, `--completion_column` or "
            "`--messages_column`."
        )
    dataset = dataset.remove_columns([column for column in columns if column not in renames])
    return dataset.rename_columns({old: new for old, new in renames.items() if old != new})


def _message_problem(message: Any) -> str | None:
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        return f"expected a chat message, {{'role': ..., 'content': ...}}, got {shown(message)}."
    if not isinstance(message.get("content"), str):
        return f"a message's content must be text, got {shown(message.get('content'))}."
    return None


def _turns(minimum: int) -> Any:
    return list_of(_message_problem, "chat messages", minimum)


def _prompt_problem(value: Any) -> str | None:
    return text_value(value) if not isinstance(value, list) else _turns(0)(value)


def _completion_problem(value: Any) -> str | None:
    if isinstance(value, list):
        return _turns(1)(value)
    return non_empty_text_value(value) and f"{non_empty_text_value(value)} A completion is what the student learns."


def _conversation_problem(value: Any) -> str | None:
    problem = _turns(2)(value)
    if problem is None and value[-1]["role"] != "assistant":
        return "the conversation must end with an assistant turn (the answer to distil)."
    return problem


def data_check(args: DistillArguments) -> Any:
    """The checks of one dataset's prompt/completion or conversation columns, run before any model is loaded."""

    def check(dataset: Dataset, source: str) -> None:
        columns = dataset.column_names
        if args.prompt_column in columns:
            checkers = {args.prompt_column: _prompt_problem}
            if args.completion_column in columns and not args.generate_teacher_answers:
                checkers[args.completion_column] = _completion_problem
            check_rows(dataset, source, checkers)
            if len(checkers) == 2:
                pairs = zip(dataset[args.prompt_column], dataset[args.completion_column])
                for row, (prompt, completion) in enumerate(pairs):
                    if isinstance(prompt, str) != isinstance(completion, str):
                        raise CommandError(
                            f"{location(source, row, args.completion_column)}: the prompt and the completion must "
                            "both be text or both be lists of chat messages."
                        )
        elif args.messages_column in columns:
            check_rows(dataset, source, {args.messages_column: _conversation_problem})

    return check


def _prompts(dataset: Dataset) -> list[str | list[dict[str, Any]]]:
    """The prompt of each sample: text, or the conversation before its last turn."""
    if "prompt" in dataset.column_names:
        return list(dataset["prompt"])
    prompts = []
    for messages in dataset["messages"]:
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise CommandError("Each `messages` conversation must end with an assistant turn, after a prompt.")
        prompts.append(messages[:-1])
    return prompts


def _prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict[str, Any]]) -> list[int]:
    """The prompt as the model reads it in training: conversations through its chat template, text as it is."""
    if isinstance(prompt, str):
        return tokenizer(prompt)["input_ids"]
    if tokenizer.chat_template is None:
        return tokenizer(_message_text(prompt))["input_ids"]
    encoded = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(encoded["input_ids"])


def _last_user_text(prompt: str | list[dict[str, Any]]) -> str:
    if isinstance(prompt, str):
        return prompt
    return next(str(m["content"]) for m in reversed(prompt) if m["role"] == "user")


def teacher_prompt_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict[str, Any]], few_shot_language: str
) -> list[int]:
    """The teacher's generation prompt: its chat template when it has one (a chat teacher), else few-shot examples
    in `few_shot_language` followed by the question (a base teacher), as in the ULD paper's protocol."""
    from ..demo.data import few_shot_prompt

    if tokenizer.chat_template is not None:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(encoded["input_ids"])
    try:
        return tokenizer(few_shot_prompt(_last_user_text(prompt), few_shot_language))["input_ids"]
    except ValueError as error:
        raise CommandError(str(error)) from None


def greedy_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[list[int]],
    max_new_tokens: int,
    batch_size: int,
) -> list[str]:
    """Greedy answers (their first line, as the demo's) to tokenized prompts."""
    from ..demo.generation import first_line, generate_greedy

    generated = generate_greedy(model, tokenizer, prompt_ids, max_new_tokens, batch_size)
    return [first_line(tokenizer.decode(tokens, skip_special_tokens=True)) for tokens in generated]


def _with_teacher_answers(
    dataset: Dataset | None,
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    args: DistillArguments,
) -> Dataset | None:
    if dataset is None:
        return None
    prompts = _prompts(dataset)
    prompt_ids = [teacher_prompt_ids(tokenizer, prompt, args.few_shot_language) for prompt in prompts]
    answers = greedy_answers(teacher, tokenizer, prompt_ids, args.max_new_tokens, args.generation_batch_size)
    completions = [
        answer if isinstance(prompt, str) else [{"role": "assistant", "content": answer}]
        for prompt, answer in zip(prompts, answers)
    ]
    kept = [index for index, answer in enumerate(answers) if answer]
    if not kept:
        raise CommandError("The teacher gave an empty answer to every prompt; raise `--max_new_tokens` or check it.")
    if len(kept) < len(answers):
        note(f"the teacher gave {len(answers) - len(kept)} empty answers; those prompts are left out.")
    return Dataset.from_dict({"prompt": prompts, "completion": completions}).select(kept)


def _references(dataset: Dataset) -> list[str]:
    if "completion" in dataset.column_names:
        return [c if isinstance(c, str) else _message_text(c) for c in dataset["completion"]]
    return [str(messages[-1]["content"]) for messages in dataset["messages"]]


def _generation_metrics(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: Dataset, args: DistillArguments
) -> dict[str, float]:
    prompt_ids = [_prompt_ids(tokenizer, prompt) for prompt in _prompts(dataset)]
    predictions = greedy_answers(model, tokenizer, prompt_ids, args.max_new_tokens, args.generation_batch_size)
    references = [reference.strip() for reference in _references(dataset)]
    return {
        "eval_rougeL": RougeL().compute(predictions=predictions, references=references)["rougeL"],
        "eval_token_f1": TokenF1().compute(predictions=predictions, references=references)["token_f1"],
    }


def _cached(
    dataset: Dataset | None,
    name: str,
    teacher: PreTrainedModel,
    tokenizers: tuple[PreTrainedTokenizerBase, PreTrainedTokenizerBase],
    training_args: ULDConfig,
    batch_size: int,
) -> Dataset | None:
    """The dataset tokenized for both models (as the trainer would) with the teacher's sorted probabilities."""
    if dataset is None:
        return None
    prepared = prepare_uld_dataset_for(dataset, *tokenizers, training_args, dataset_name=name)
    return cache_teacher_probs(
        teacher,
        prepared,
        top_k=training_args.uld_top_k,
        teacher_temperature=training_args.uld_teacher_temperature,
        batch_size=batch_size,
        pad_token_id=tokenizers[1].pad_token_id,
        processing_class=tokenizers[0],
        teacher_processing_class=tokenizers[1],
        max_length=training_args.max_length,
    )


def _require_causal_lm(config: PretrainedConfig, who: str) -> None:
    """ULD trains and reads next-token distributions, so both models must be causal LMs (an encoder has none)."""
    auto_map = getattr(config, "auto_map", None) or {}
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING and "AutoModelForCausalLM" not in auto_map:
        raise CommandError(
            f"The {who} is a {config.model_type!r} model without a causal-LM head; ULD distils next-token "
            "predictions, so both the student and the teacher must be causal LMs (loadable with "
            "AutoModelForCausalLM). To train EuroBERT, use `eurobert-hf finetune` or `eurobert-hf pretrain`."
        )


def _name(name_or_path: str) -> str:
    return os.path.basename(os.path.normpath(name_or_path)) if os.path.isdir(name_or_path) else name_or_path


def run(argv: Sequence[str]) -> int:
    """Runs `eurobert-hf distill` with `argv`; returns the exit status."""
    args, data, training_args, model_args, output_args = parse_arguments(
        (DistillArguments, DataArguments, ULDConfig, ModelConfig),
        argv,
        "eurobert-hf distill",
        __doc__,
        None if torch.cuda.is_available() else CPU_DEFAULTS,
    )
    if not model_args.model_name_or_path:
        raise CommandError("Pass the student with `--model_name_or_path`.")
    teacher_name = training_args.teacher_model_name_or_path
    if not teacher_name:
        raise CommandError("Pass the teacher with `--teacher_model_name_or_path`.")
    check_output_dir(training_args, output_args)
    resume = resolve_resume(training_args)
    remote = training_args.trust_remote_code
    _require_causal_lm(load_model_config(model_args.model_name_or_path, "student model", remote), "student")
    _require_causal_lm(load_model_config(teacher_name, "teacher model", remote), "teacher")
    tokenizer = load_tokenizer(model_args.model_name_or_path, "student", remote)
    teacher_tokenizer = load_tokenizer(training_args.teacher_tokenizer_name_or_path or teacher_name, "teacher", remote)

    train_data, eval_data = load_splits(data, training_args.seed, data_check(args))
    need_completion = not args.generate_teacher_answers
    train_data = _normalise_columns(train_data, args, need_completion)
    eval_data = _normalise_columns(eval_data, args, need_completion)
    # The student's loading options; the teacher loads with them too unless `--teacher_model_init_kwargs` is given.
    training_args.model_init_kwargs = {
        "dtype": model_args.dtype,
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "trust_remote_code": remote,
        **(training_args.model_init_kwargs or {}),
    }
    # On the training device, so that answer generation and the teacher cache run on the accelerator too.
    teacher = load_teacher_model(teacher_name, training_args).to(training_args.device).eval()
    # Consumed here: the trainer gets the loaded teacher and would warn that they are ignored.
    training_args.teacher_model_init_kwargs = None
    if args.generate_teacher_answers:
        train_data = _with_teacher_answers(train_data, teacher, teacher_tokenizer, args)
        eval_data = _with_teacher_answers(eval_data, teacher, teacher_tokenizer, args)
    eval_texts = eval_data
    if args.teacher_cache:
        tokenizers = (tokenizer, teacher_tokenizer)
        batch = args.generation_batch_size
        train_data = _cached(train_data, "train", teacher, tokenizers, training_args, batch)
        eval_data = _cached(eval_data, "eval", teacher, tokenizers, training_args, batch)
        teacher = None
        gc.collect()
    if eval_data is None and training_args.eval_strategy != "no":
        note("no evaluation data (pass `--eval_file`, `--eval_split` or `--eval_split_size`): evaluation is off.")
        training_args.eval_strategy = "no"

    trainer = ULDTrainer(
        model=model_args.model_name_or_path,
        teacher_model=teacher,
        args=training_args,
        train_dataset=train_data,
        eval_dataset=eval_data,
        processing_class=tokenizer,
        teacher_processing_class=None if teacher is None else teacher_tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.teacher_name_or_path = teacher_name
    result = train(trainer, resume, "distill", argv)
    metrics = trainer.evaluate() if eval_data is not None else {}
    final_model = trainer.model.merge_and_unload() if model_args.use_peft else trainer.model
    if eval_texts is not None and args.eval_generation:
        metrics.update(_generation_metrics(final_model, tokenizer, eval_texts, args))

    output_dir = write_output_folder(final_model, training_args.output_dir, tokenizer=tokenizer, model_card=None)
    trainer.create_model_card(dataset_name=data.dataset_name or Path(data.train_file).name)
    card = ModelCard.load(output_dir / "README.md")
    rows = [
        ("student", _name(model_args.model_name_or_path)),
        ("teacher", _name(teacher_name)),
        ("training samples", len(trainer.train_dataset)),
        ("teacher answers", "generated" if args.generate_teacher_answers else "from the data"),
        ("teacher cache", "yes" if args.teacher_cache else "no"),
        ("steps", result.global_step),
        ("train loss", result.training_loss),
        *metric_rows(metrics, "eval_"),
    ]
    return finish(
        "eurobert-hf distill (ULD)",
        rows,
        output_dir,
        training_args,
        lambda: push_output(final_model, training_args, tokenizer=tokenizer, model_card=card),
    )
