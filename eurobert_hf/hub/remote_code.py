"""Self-contained Hub remote code for saved EuroBERT models.

`export_remote_code` copies the package's own `configuration_eurobert.py` and `modeling_eurobert.py` next to the
weights and writes an `auto_map` listing every EuroBERT head, pinned to those files in the same repository. The saved
folder then loads for everyone: with `trust_remote_code=True` and no `eurobert_hf` (transformers 4.56 and later);
without it into transformers' native EuroBERT (5.3 and later); and into the plugin's classes when `eurobert_hf` is
imported.

`remove_dangling_auto_map` (a saved folder) and `prune_auto_map` (loaded models and tokenizers, in memory) keep every
saved folder, EuroBERT or not, from naming code outside itself: no `auto_map` entry into another repository, none for
a file the folder lacks.
"""

import ast
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..modeling import configuration_eurobert, modeling_eurobert
from ..modeling.configuration_eurobert import EUROBERT_AUTO_MAP

REMOTE_CODE_MODULES = (configuration_eurobert, modeling_eurobert)
REMOTE_CODE_FILES = tuple(Path(module.__file__).name for module in REMOTE_CODE_MODULES)

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


def is_foreign_reference(reference: str) -> bool:
    """Whether an `auto_map` reference names another repository's code (`"owner/repo--module.Class"`)."""
    return "--" in reference


def _kept_auto_map(auto_map: Any, keep: Callable[[str], bool]) -> dict:
    """The entries of `auto_map` whose references `keep` accepts. In a tokenizer's `[slow, fast]` pair a refused class
    becomes `None` (what transformers writes for a missing one); an entry with nothing left is dropped."""
    if not isinstance(auto_map, dict):
        return {}
    kept = {}
    for auto_class, reference in auto_map.items():
        if isinstance(reference, list | tuple):
            references = [item if isinstance(item, str) and keep(item) else None for item in reference]
            if any(references):
                kept[auto_class] = references
        elif isinstance(reference, str) and keep(reference):
            kept[auto_class] = reference
    return kept


def remove_dangling_auto_map(save_directory: str | os.PathLike) -> Path:
    """Drops, from every JSON file of a saved folder, the `auto_map` entries that point at code the folder lacks.

    Entries into another repository (`"owner/repo--module.Class"`, carried by Hub-era fine-tunes and by tokenizers
    loaded from the Hub) would make `trust_remote_code=True` run that repository's current, unpinned code; entries
    whose module file is missing cannot load at all. Entries whose module file sits next to the JSON file are kept.
    Works for any model type (`config.json`, `tokenizer_config.json`, processor configs, ...).
    """
    save_directory = Path(save_directory)
    for path in sorted(save_directory.rglob("*.json")):
        raw = path.read_bytes()
        if b'"auto_map"' not in raw:
            continue
        try:
            content = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(content, dict) or "auto_map" not in content:
            continue

        def held(reference: str, folder: Path = path.parent) -> bool:
            return not is_foreign_reference(reference) and (folder / f"{reference.rsplit('.', 1)[0]}.py").is_file()

        kept = _kept_auto_map(content["auto_map"], held)
        if kept == content["auto_map"]:
            continue
        if kept:
            content["auto_map"] = kept
        else:
            content.pop("auto_map")
        _write_json_atomically(path, content)
    return save_directory


def prune_auto_map(*objects: Any) -> None:
    """Removes, in memory, the `auto_map` entries of loaded models' configs and tokenizers that a save would not back
    with code in the saved folder.

    Entries into other repositories always go. Other entries stay only for objects whose class transformers copies
    into the folder on save (registered with `register_for_auto_class`, as remote-code and EuroBERT classes are);
    for the rest, the entries name files of the folder they were loaded from. Whatever then saves the objects (the
    Trainer's checkpoints and Hub pushes included) names no code outside its own folder.
    """
    for obj in objects:
        if hasattr(obj, "get_base_model"):  # a PEFT model: its base model's class is what gets saved
            obj = obj.get_base_model()
        config = getattr(obj, "config", None)
        if isinstance(getattr(config, "auto_map", None), dict):
            kept = _saved_auto_map(config.auto_map, _copies_code(obj) or _copies_code(config))
            if kept:
                config.auto_map = kept
            else:
                del config.auto_map
        init_kwargs = getattr(obj, "init_kwargs", None)
        if isinstance(init_kwargs, dict) and "auto_map" in init_kwargs:
            kept = _saved_auto_map(init_kwargs["auto_map"], _copies_code(obj))
            if kept:
                init_kwargs["auto_map"] = kept
            else:
                del init_kwargs["auto_map"]


def _copies_code(obj: Any) -> bool:
    return getattr(type(obj), "_auto_class", None) is not None


def _saved_auto_map(auto_map: Any, copies_code: bool) -> dict:
    return _kept_auto_map(auto_map, lambda reference: not is_foreign_reference(reference)) if copies_code else {}
