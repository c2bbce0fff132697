"""Tiny causal LMs over real tokenizers, and small datasets, for the ULD trainer tests.

The student reads GPT-2's byte-level BPE (50257 tokens) and the teacher Llama-3's (128256 tokens): two real, different
tokenizers, so every test distils across vocabularies of different sizes. The models are 1-layer Llamas with hidden
size 16 and tied embeddings, built in memory with a fixed seed.
"""

import copy
import functools
import os

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from tests.tokenizer_assets import gpt2_tokenizer, llama3_tokenizer

# A Llama-3-style chat template (the real one, minus tools and dates), so that the teacher renders conversations its
# own way while the student, without a template, reads them as plain text.
TEACHER_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

PROMPTS = [
    "The capital of France is",
    "Zwei plus zwei ist",
    "Le ciel est",
    "La capitale dell'Italia è",
    "Water boils at",
    "El perro come",
]
COMPLETIONS = [
    " Paris.",
    " vier, nicht fünf.",
    " bleu aujourd'hui.",
    " Roma.",
    " 100 degrees Celsius at sea level.",
    " carne.",
]


def student_tokenizer() -> PreTrainedTokenizerBase:
    """GPT-2's tokenizer, shared by the tests: do not modify it (copy it first)."""
    return gpt2_tokenizer()


def teacher_tokenizer() -> PreTrainedTokenizerBase:
    """Llama-3's tokenizer, shared by the tests: do not modify it (copying it takes seconds)."""
    return llama3_tokenizer()


@functools.cache
def chat_teacher_tokenizer() -> PreTrainedTokenizerBase:
    """Llama-3's tokenizer with a Llama-3-style chat template (shared: do not modify it)."""
    tokenizer = copy.deepcopy(llama3_tokenizer())
    tokenizer.chat_template = TEACHER_CHAT_TEMPLATE
    return tokenizer


def tiny_causal_lm(vocab_size: int, seed: int, dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    """A 1-layer Llama with hidden size 16 over `vocab_size` tokens, initialised from `seed`."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).to(dtype)


def tiny_student(seed: int = 0, dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    return tiny_causal_lm(len(gpt2_tokenizer()), seed, dtype)


def tiny_teacher(seed: int = 1, dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    return tiny_causal_lm(len(llama3_tokenizer()), seed, dtype)


def prompt_completion_dataset(size: int = 4) -> Dataset:
    """Plain-text prompt–completion pairs in several languages, of different lengths."""
    return Dataset.from_dict({"prompt": PROMPTS[:size], "completion": COMPLETIONS[:size]})


def conversational_dataset(size: int = 4) -> Dataset:
    """The same pairs as lists of chat messages."""
    return Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": prompt}] for prompt in PROMPTS[:size]],
            "completion": [[{"role": "assistant", "content": completion}] for completion in COMPLETIONS[:size]],
        }
    )


def save_pretrained_pair(folder: str) -> tuple[str, str]:
    """Saves the tiny student and teacher, each with its tokenizer, under `folder`; returns their paths."""
    paths = []
    for name, model, tokenizer in (
        ("student", tiny_student(), student_tokenizer()),
        ("teacher", tiny_teacher(), teacher_tokenizer()),
    ):
        path = os.path.join(folder, name)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths.append(path)
    return paths[0], paths[1]
