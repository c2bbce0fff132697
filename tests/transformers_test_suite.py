"""transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`, ...), taken at test time from the
source distribution of the installed transformers version.

The sdist ships `tests/*.py` but not the sub-packages those files import (`tests/generation`, `tests/exporters`,
`tests/utils`, `tests/pipelines`). The generation and export mixins are replaced by empty classes (an encoder has no
`generate`; graph export is tested elsewhere in this suite) and the common config kwargs by `COMMON_CONFIG_KWARGS`
below. Nothing is copied into this repository: the files are downloaded once with pip and cached under
`$EUROBERT_HF_CACHE` (default `~/.cache/eurobert_hf`)/transformers-tests/<version>. The `parameterized` package those
files need comes with the `test` extra.
"""

import importlib
import os
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

import transformers

PACKAGE = "transformers_tests"

# Non-default values of `PretrainedConfig`'s common attributes, for `ConfigTester.check_config_arguments_init`.
COMMON_CONFIG_KWARGS = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["EuroBertForMaskedLM"],
    "finetuning_task": "mnli",
    "id2label": {0: "negative", 1: "positive"},
    "label2id": {"negative": 0, "positive": 1},
    "problem_type": "single_label_classification",
    "tokenizer_class": "PreTrainedTokenizerFast",
}


def cache_dir() -> Path:
    root = Path(os.environ.get("EUROBERT_HF_CACHE", Path.home() / ".cache" / "eurobert_hf"))
    return root / "transformers-tests" / transformers.__version__


def _download_sdist(requirement: str, destination: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", requirement, "--no-deps", "--no-binary", ":all:"]
    command += ["-d", str(destination), "-q"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    files = list(destination.iterdir())
    if result.returncode != 0 or len(files) != 1:
        raise RuntimeError(f"`{' '.join(command)}` failed: {result.stderr.strip()[-500:]}")
    return files[0]


def _fetch_common_tests(target: Path) -> None:
    """Extracts `tests/*.py` of the installed version's sdist into `target/transformers_tests` (atomically)."""
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target) as scratch:
        scratch = Path(scratch)
        archive = _download_sdist(f"transformers=={transformers.__version__}", scratch / "download")
        package = scratch / PACKAGE
        package.mkdir()
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py") and member.isfile():
                    (package / parts[2]).write_bytes(tar.extractfile(member).read())
        (package / "__init__.py").touch()
        package.rename(target / PACKAGE)


def _install_stub(name: str, **attributes) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module


def load() -> types.SimpleNamespace:
    """Imports the common test modules of the installed transformers; raises `RuntimeError` when they cannot be had
    (no network on first use)."""
    root = cache_dir()
    if not (root / PACKAGE / "test_modeling_common.py").exists():
        _fetch_common_tests(root)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))

    for subpackage in ("generation", "exporters", "utils"):
        _install_stub(f"{PACKAGE}.{subpackage}", __path__=[])
    _install_stub(f"{PACKAGE}.generation.test_utils", GenerationTesterMixin=type("GenerationTesterMixin", (), {}))
    _install_stub(f"{PACKAGE}.exporters.test_export", ExportTesterMixin=type("ExportTesterMixin", (), {}))
    _install_stub(f"{PACKAGE}.utils.test_configuration_utils", config_common_kwargs=COMMON_CONFIG_KWARGS)
    return types.SimpleNamespace(
        modeling=importlib.import_module(f"{PACKAGE}.test_modeling_common"),
        configuration=importlib.import_module(f"{PACKAGE}.test_configuration_common"),
    )
