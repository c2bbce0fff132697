"""Shared helpers of the Hub tests: a tiny tokenizer, tiny EuroBERT models, and isolated interpreters.

`run_without_plugin` runs a script in a fresh interpreter (`-I`, temporary working directory) where `eurobert_hf`
cannot be imported even when it is pip-installed (a `sys.meta_path` hook refuses it), with the transformers and Hub
caches in a temporary folder, which is how a user without the plugin loads a pushed model.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from eurobert_hf.modeling import EuroBertConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
SPECIALS = ["<pad>", "<unk>", "<|begin_of_text|>", "<|end_of_text|>", "<mask>"]
WORDS = (
    "the capital of france is paris . eurobert speaks many languages parle plusieurs langues marie curie worked in "
    "where did she work ? on moon london berlin"
).split()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer with EuroBERT's special-token layout (bos ... eos), built in memory."""
    vocab = {token: index for index, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    bos, eos = ("<|begin_of_text|>", vocab["<|begin_of_text|>"]), ("<|end_of_text|>", vocab["<|end_of_text|>"])
    backend.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A <|end_of_text|>",
        pair="<|begin_of_text|> $A <|end_of_text|> $B:1 <|end_of_text|>:1",
        special_tokens=[bos, eos],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=64,
        model_input_names=["input_ids", "attention_mask"],
    )


def tiny_config(**overrides) -> EuroBertConfig:
    """A EuroBERT config small enough for CPU tests (GQA, head_dim != hidden / heads), matching `tiny_tokenizer`."""
    tokenizer_vocab = len(SPECIALS) + len(WORDS)
    settings = dict(
        vocab_size=tokenizer_vocab,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=64,
        pad_token_id=SPECIALS.index("<pad>"),
        bos_token_id=SPECIALS.index("<|begin_of_text|>"),
        eos_token_id=SPECIALS.index("<|end_of_text|>"),
        mask_token_id=SPECIALS.index("<mask>"),
    )
    return EuroBertConfig(**(settings | overrides))


def tiny_model(model_class, seed: int = 0, **config_overrides):
    """A randomly initialised tiny EuroBERT head in eval mode."""
    torch.manual_seed(seed)
    return model_class(tiny_config(**config_overrides)).eval()


BLOCK_PLUGIN = textwrap.dedent(
    f"""
    import sys

    class _RefusePlugin:
        def find_spec(self, name, path=None, target=None):
            if name == "eurobert_hf" or name.startswith("eurobert_hf."):
                raise ModuleNotFoundError(f"No module named {{name!r}} (hidden by the test)")
            return None

    sys.meta_path.insert(0, _RefusePlugin())
    # Only the checkout itself goes: a virtual environment may live inside it (CI creates them there).
    sys.path[:] = [entry for entry in sys.path if entry.rstrip("/") != {str(REPO_ROOT)!r}]
    try:
        import eurobert_hf  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise AssertionError("eurobert_hf must not be importable in this interpreter")
    """
)


def run_without_plugin(
    script: str, tmp_path: Path, env: dict[str, str] | None = None, timeout: int = 600, with_stderr: bool = False
) -> str:
    """Runs `script` in a fresh interpreter where `eurobert_hf` is not importable; returns its stdout.

    Fails with the interpreter's output when the script exits non-zero.
    """
    script = BLOCK_PLUGIN + textwrap.dedent(script)
    return run_python(script, tmp_path, env=env, timeout=timeout, isolated=True, with_stderr=with_stderr)


def run_python(
    script: str,
    tmp_path: Path,
    env: dict[str, str] | None = None,
    timeout: int = 600,
    isolated: bool = False,
    with_stderr: bool = False,
) -> str:
    """Runs `script` in a fresh interpreter (same venv) with private HF caches; with the plugin importable unless
    `isolated`. Returns stdout (then stderr, with `with_stderr`); fails with both on a non-zero exit."""
    work = tmp_path / "interpreter"
    work.mkdir(parents=True, exist_ok=True)
    home = tmp_path / "hf_home"
    full_env = {
        key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGINGFACE_", "PYTHON"))
    }
    full_env |= {
        "HF_HOME": str(home),
        "HF_MODULES_CACHE": str(home / "modules"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    if not isolated:
        full_env["PYTHONPATH"] = str(REPO_ROOT)
    full_env |= env or {}
    command = [sys.executable, *(["-I"] if isolated else []), "-c", textwrap.dedent(script)]
    result = subprocess.run(command, cwd=work, env=full_env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout + (f"\n{result.stderr}" if with_stderr else "")


def last_json_line(output: str):
    """The JSON document a subprocess printed last."""
    return json.loads(output.strip().splitlines()[-1])
