"""Self-contained Hub remote code for saved EuroBERT models.

`export_remote_code` copies the package's own `configuration_eurobert.py` and `modeling_eurobert.py` next to the
weights and writes an `auto_map` listing every EuroBERT head, pinned to those files in the same repository. The saved
folder then loads for everyone: with `trust_remote_code=True` and no `eurobert_hf` (transformers 4.56 and later);
without it into transformers' native EuroBERT (5.3 and later); and into the plugin's classes when `eurobert_hf` is
imported.
"""

import ast
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from ..modeling import configuration_eurobert, modeling_eurobert

REMOTE_CODE_MODULES = (configuration_eurobert, modeling_eurobert)
REMOTE_CODE_FILES = tuple(Path(module.__file__).name for module in REMOTE_CODE_MODULES)

# Every Auto class the plugin registers, pinned to the code files of the same repository (no "repo--module" entries).
EUROBERT_AUTO_MAP = {
    "AutoConfig": "configuration_eurobert.EuroBertConfig",
    "AutoModel": "modeling_eurobert.EuroBertModel",
    "AutoModelForMaskedLM": "modeling_eurobert.EuroBertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_eurobert.EuroBertForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_eurobert.EuroBertForTokenClassification",
    "AutoModelForQuestionAnswering": "modeling_eurobert.EuroBertForQuestionAnswering",
    "AutoModelForMultipleChoice": "modeling_eurobert.EuroBertForMultipleChoice",
}

# What remote code may import: the standard library, torch and transformers, and its sibling files.
_ALLOWED_PACKAGES = frozenset({"torch", "transformers"}) | frozenset(sys.stdlib_module_names)
_SIBLING_MODULES = frozenset(Path(name).stem for name in REMOTE_CODE_FILES)


def _is_availability_check(test: ast.expr) -> bool:
    return any(
        isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")).endswith("_available")
        for node in ast.walk(test)
    )


def _unguarded_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under `try:` or `if is_..._available():`, which transformers does not require to be
    importable when it loads remote code (optional backends such as flash-attn)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.Try) or (isinstance(node, ast.If) and _is_availability_check(node.test)):
            stack.extend(node.orelse if isinstance(node, ast.If) else [*node.orelse, *node.finalbody])
            continue
        stack.extend(ast.iter_child_nodes(node))


def check_self_contained(source: str, filename: str) -> None:
    """Raises `ValueError` if a remote-code file imports anything but stdlib, torch, transformers or its siblings.

    The Hub executes these files in a user's environment that has no `eurobert_hf`; an absolute import of the package
    (or of a third-party module) would crash there.
    """
    for node in _unguarded_nodes(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            modules = [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [(node.module or "", node.level)]
        else:
            continue
        for module, level in modules:
            allowed = module in _SIBLING_MODULES if level else module.split(".")[0] in _ALLOWED_PACKAGES
            if not allowed:
                raise ValueError(
                    f"{filename}:{node.lineno} imports {'.' * level}{module!r}; Hub remote code may only import the "
                    f"standard library, torch, transformers and its sibling files {sorted(_SIBLING_MODULES)}."
                )


def remote_code_sources() -> dict[str, str]:
    """The remote-code files (name -> source) exported with a model, checked to be self-contained."""
    sources = {}
    for module in REMOTE_CODE_MODULES:
        path = Path(module.__file__)
        source = path.read_text(encoding="utf-8")
        check_self_contained(source, path.name)
        sources[path.name] = source
    return sources


def _write_json_atomically(path: Path, content: dict) -> None:
    staging = path.with_name(f".{path.name}.incomplete")
    staging.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(staging, path)


def _read_eurobert_config(save_directory: Path) -> dict:
    config_path = save_directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"No config.json in {save_directory}: save the model there first (`save_pretrained`).")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("model_type") != "eurobert":
        raise ValueError(
            f"{config_path} describes a {config.get('model_type')!r} model; remote code is exported only for "
            "EuroBERT (`model_type: eurobert`)."
        )
    return config


def export_remote_code(save_directory: str | os.PathLike) -> Path:
    """Writes EuroBERT's self-contained remote code and a full, same-repository `auto_map` into a saved model folder.

    Args:
        save_directory (`str` or `os.PathLike`):
            A folder written by `save_pretrained` of a EuroBERT model (any head).

    Returns:
        `Path`: the folder.

    Raises:
        `FileNotFoundError`: if the folder holds no `config.json`. `ValueError`: if the model is not a EuroBERT.
    """
    save_directory = Path(save_directory)
    config = _read_eurobert_config(save_directory)
    for name, source in remote_code_sources().items():
        (save_directory / name).write_text(source, encoding="utf-8")
    config["auto_map"] = dict(EUROBERT_AUTO_MAP)
    _write_json_atomically(save_directory / "config.json", config)
    return save_directory


def remove_dangling_auto_map(save_directory: str | os.PathLike) -> Path:
    """Drops `auto_map` entries of a saved EuroBERT folder that point at code the folder does not contain.

    Hub-era fine-tunes carry entries such as `"EuroBERT/EuroBERT-210m--modeling_eurobert.EuroBertModel"`, which make
    `trust_remote_code` run another repository's current, unpinned code. Entries whose module file is in the folder
    are kept.
    """
    save_directory = Path(save_directory)
    config = _read_eurobert_config(save_directory)
    auto_map = config.get("auto_map")
    if not auto_map:
        return save_directory

    def is_local(reference: str | list) -> bool:
        references = reference if isinstance(reference, list) else [reference]
        return all(
            item is None or ("--" not in item and (save_directory / f"{item.rsplit('.', 1)[0]}.py").is_file())
            for item in references
        )

    kept = {auto_class: reference for auto_class, reference in auto_map.items() if is_local(reference)}
    if kept:
        config["auto_map"] = kept
    else:
        config.pop("auto_map")
    _write_json_atomically(save_directory / "config.json", config)
    return save_directory
