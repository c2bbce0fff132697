"""Batched greedy answers: the teacher's few-shot answers (training targets) and the student's zero-shot answers."""

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .data import Prompt, few_shot_prompt


@dataclass(frozen=True)
class TeacherAnswer:
    """The teacher's greedy answer to one prompt.

    Args:
        prompt (`Prompt`): the question.
        prompt_ids (`list[int]`): the teacher's few-shot prompt, tokenized.
        answer_ids (`list[int]`): the generated tokens up to and including the one that ends the answer line.
        text (`str`): the answer's first line, stripped.
    """

    prompt: Prompt
    prompt_ids: list[int]
    answer_ids: list[int]
    text: str


def first_line(text: str) -> str:
    """The text up to its first newline, stripped: the teacher's answers are single lines, so both sides are cut."""
    return text.split("\n", 1)[0].strip()


def _answer_length(tokens: list[int], tokenizer: PreTrainedTokenizerBase, stop_ids: set[int]) -> int:
    # Number of generated tokens up to and including the first one that holds a newline or is an end/pad token.
    for index, token in enumerate(tokens):
        if token in stop_ids or "\n" in tokenizer.decode([token]):
            return index + 1
    return len(tokens)


@torch.no_grad()
def generate_greedy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str] | list[list[int]],
    max_new_tokens: int,
    batch_size: int,
) -> list[list[int]]:
    """Greedy continuation of each prompt (text, or token ids with special tokens already in), in batches with left
    padding; each continuation stops at a newline or at EOS. Returns the generated token ids of each prompt."""
    if tokenizer.pad_token_id is None:
        raise ValueError("The tokenizer has no padding token; set `tokenizer.pad_token` before generating in batches.")
    encoded = [tokenizer(p)["input_ids"] if isinstance(p, str) else list(p) for p in prompts]
    model.eval()
    results: list[list[int]] = []
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor(
            [[tokenizer.pad_token_id] * (width - len(ids)) + ids for ids in batch], device=model.device
        )
        attention_mask = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=model.device
        )
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            stop_strings=["\n"],
            tokenizer=tokenizer,
            pad_token_id=tokenizer.pad_token_id,
        )
        results.extend(row[width:].tolist() for row in output)
    return results


def teacher_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Prompt],
    max_new_tokens: int = 40,
    batch_size: int = 16,
) -> list[TeacherAnswer]:
    """The teacher's greedy answers to its few-shot prompts (the paper's protocol for a base teacher)."""
    stop_ids = {token for token in (tokenizer.eos_token_id, tokenizer.pad_token_id) if token is not None}
    prompt_ids = [tokenizer(few_shot_prompt(p.text, p.language))["input_ids"] for p in prompts]
    generated = generate_greedy(model, tokenizer, prompt_ids, max_new_tokens, batch_size)
    answers = []
    for prompt, ids, tokens in zip(prompts, prompt_ids, generated):
        tokens = tokens[: _answer_length(tokens, tokenizer, stop_ids)]
        answers.append(
            TeacherAnswer(prompt, ids, tokens, first_line(tokenizer.decode(tokens, skip_special_tokens=True)))
        )
    return answers


def student_prompt_ids(tokenizer: PreTrainedTokenizerBase, question: str) -> list[int]:
    """The student's zero-shot prompt: the question as a user turn of its chat template, ready for the answer."""
    messages = [{"role": "user", "content": question}]
    return list(
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )


def student_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[Prompt],
    max_new_tokens: int = 40,
    batch_size: int = 16,
) -> list[str]:
    """The student's greedy zero-shot answers (first line, as the teacher's)."""
    prompt_ids = [student_prompt_ids(tokenizer, p.text) for p in prompts]
    generated = generate_greedy(model, tokenizer, prompt_ids, max_new_tokens, batch_size)
    return [first_line(tokenizer.decode(tokens, skip_special_tokens=True)) for tokens in generated]
