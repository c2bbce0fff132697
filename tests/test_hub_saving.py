"""Atomic saving: an interrupted save never leaves a folder that loads half-written."""

import json
import os

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from eurobert_hf.hub import MANIFEST_NAME, atomic_directory, save_for_hub
from eurobert_hf.modeling import EuroBertForMaskedLM
from tests.hub_fixtures import run_python, tiny_model, tiny_tokenizer

INPUT_IDS = torch.tensor([[2, 5, 6, 7, 3]])


class FailingTokenizer:
    """Writes part of its files, then fails, as a full disk or a crash in the middle of a save would."""

    def save_pretrained(self, folder):
        with open(os.path.join(folder, "tokenizer.json"), "w") as handle:
            handle.write("{")
        raise OSError("No space left on device")


def _leftovers(parent):
    return [path.name for path in parent.iterdir() if path.name.startswith(".")]


def _logits(folder):
    with torch.no_grad():
        return AutoModelForMaskedLM.from_pretrained(folder).eval()(INPUT_IDS).logits


def test_saved_folder_loads_with_the_same_outputs(tmp_path):
    model = tiny_model(EuroBertForMaskedLM)
    folder = save_for_hub(model, tmp_path / "model", tokenizer=tiny_tokenizer())
    with torch.no_grad():
        expected = model(INPUT_IDS).logits
    torch.testing.assert_close(_logits(folder), expected, rtol=0, atol=1e-6)
    assert {"config.json", "model.safetensors", "tokenizer.json", "modeling_eurobert.py"} <= set(os.listdir(folder))
    assert oct(folder.stat().st_mode & 0o777) == oct(0o755)
    assert _leftovers(tmp_path) == []


def test_failure_mid_save_leaves_no_folder(tmp_path):
    model = tiny_model(EuroBertForMaskedLM)
    with pytest.raises(OSError, match="No space left"):
        save_for_hub(model, tmp_path / "model", tokenizer=FailingTokenizer())
    assert not (tmp_path / "model").exists()
    assert _leftovers(tmp_path) == []


def test_failure_mid_overwrite_keeps_the_previous_model(tmp_path):
    previous = tiny_model(EuroBertForMaskedLM, seed=1)
    folder = save_for_hub(previous, tmp_path / "model")
    files_before = {name: (folder / name).read_bytes() for name in os.listdir(folder)}
    with pytest.raises(OSError, match="No space left"):
        save_for_hub(tiny_model(EuroBertForMaskedLM, seed=2), folder, tokenizer=FailingTokenizer(), overwrite=True)
    assert {name: (folder / name).read_bytes() for name in os.listdir(folder)} == files_before
    with torch.no_grad():
        torch.testing.assert_close(_logits(folder), previous(INPUT_IDS).logits, rtol=0, atol=1e-6)
    assert _leftovers(tmp_path) == []


def test_overwrite_needs_permission_and_a_folder(tmp_path):
    folder = save_for_hub(tiny_model(EuroBertForMaskedLM, seed=1), tmp_path / "model")
    with pytest.raises(FileExistsError, match="pass `overwrite=True`"):
        save_for_hub(tiny_model(EuroBertForMaskedLM, seed=2), folder)
    replacement = tiny_model(EuroBertForMaskedLM, seed=2)
    save_for_hub(replacement, folder, overwrite=True)
    with torch.no_grad():
        torch.testing.assert_close(_logits(folder), replacement(INPUT_IDS).logits, rtol=0, atol=1e-6)
    (tmp_path / "empty").mkdir()
    save_for_hub(replacement, tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        save_for_hub(replacement, tmp_path / "file")


def _chat_tokenizer():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
    return tokenizer


def _others(folder) -> dict:
    """Checkpoints, logs and a user's file: what an overwrite must leave as they are."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file()
        and path.relative_to(folder).parts[0] in ("checkpoint-2", "last-checkpoint", "runs", "notes.txt")
    }


def _add_others(folder) -> dict:
    for name in ("checkpoint-2", "last-checkpoint", "runs"):
        (folder / name).mkdir()
        (folder / name / "config.json").write_text(f'{{"{name}": 1}}')
    (folder / "checkpoint-2" / "model.safetensors").write_bytes(b"weights of step 2")
    (folder / "notes.txt").write_text("the user's own notes")
    return _others(folder)


def test_overwrite_replaces_the_previous_model_and_keeps_everything_else(tmp_path):
    folder = save_for_hub(tiny_model(EuroBertForMaskedLM, seed=1), tmp_path / "model", tokenizer=_chat_tokenizer())
    assert AutoTokenizer.from_pretrained(folder).chat_template
    others = _add_others(folder)
    replacement = tiny_model(EuroBertForMaskedLM, seed=2)
    save_for_hub(replacement, folder, tokenizer=tiny_tokenizer(), overwrite=True)
    assert _others(folder) == others
    assert not AutoTokenizer.from_pretrained(folder).chat_template  # the previous tokenizer's template is gone
    assert not (folder / "chat_template.jinja").exists()
    with torch.no_grad():
        torch.testing.assert_close(_logits(folder), replacement(INPUT_IDS).logits, rtol=0, atol=1e-6)
    # Saving without a tokenizer removes the previous save's tokenizer files too.
    save_for_hub(replacement, folder, overwrite=True)
    assert not (folder / "tokenizer.json").exists() and _others(folder) == others
    assert _leftovers(tmp_path) == []


def test_failure_while_moving_the_files_in_restores_the_previous_model(tmp_path, monkeypatch):
    previous = tiny_model(EuroBertForMaskedLM, seed=1)
    folder = save_for_hub(previous, tmp_path / "model", tokenizer=_chat_tokenizer())
    others = _add_others(folder)
    files_before = {name: (folder / name).read_bytes() for name in os.listdir(folder) if (folder / name).is_file()}
    replace = os.replace

    def failing_replace(source, destination):
        if ".incomplete-" in str(source) and os.path.basename(destination) == "config.json":
            raise OSError("Input/output error")
        return replace(source, destination)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="Input/output error"):
        save_for_hub(tiny_model(EuroBertForMaskedLM, seed=2), folder, tokenizer=tiny_tokenizer(), overwrite=True)
    monkeypatch.setattr(os, "replace", replace)
    assert {name: (folder / name).read_bytes() for name in os.listdir(folder) if (folder / name).is_file()} == (
        files_before
    )
    assert _others(folder) == others
    with torch.no_grad():
        torch.testing.assert_close(_logits(folder), previous(INPUT_IDS).logits, rtol=0, atol=1e-6)
    assert _leftovers(tmp_path) == []


def test_cli_output_folder_drops_the_previous_runs_stale_files(tmp_path):
    from eurobert_hf.commands.common import write_output_folder

    folder = tmp_path / "out"
    first = tiny_model(EuroBertForMaskedLM, seed=1)
    write_output_folder(first, folder, tokenizer=_chat_tokenizer(), model_card=None)
    others = _add_others(folder)
    write_output_folder(tiny_model(EuroBertForMaskedLM, seed=2), folder, tokenizer=tiny_tokenizer(), model_card=None)
    assert not AutoTokenizer.from_pretrained(folder).chat_template
    assert _others(folder) == others


@pytest.mark.slow  # fresh interpreters: tens of seconds on 2 shared cores
def test_killed_overwrite_leaves_the_previous_model_and_checkpoints(tmp_path):
    previous = tiny_model(EuroBertForMaskedLM, seed=1)
    folder = save_for_hub(previous, tmp_path / "model", tokenizer=tiny_tokenizer())
    others = _add_others(folder)
    script = f"""
    import os
    from eurobert_hf.hub import save_for_hub
    from eurobert_hf.modeling import EuroBertForMaskedLM
    from tests.hub_fixtures import tiny_model

    class KilledDuringSave:
        def save_pretrained(self, folder):
            os._exit(0)  # the process dies after the new weights are written, before the save completes

    save_for_hub(tiny_model(EuroBertForMaskedLM, seed=2), {str(folder)!r}, tokenizer=KilledDuringSave(), overwrite=True)
    """
    run_python(script, tmp_path)
    assert _others(folder) == others
    with torch.no_grad():
        torch.testing.assert_close(_logits(folder), previous(INPUT_IDS).logits, rtol=0, atol=1e-6)


@pytest.mark.slow  # fresh interpreters: tens of seconds on 2 shared cores
def test_killed_process_leaves_no_loadable_half_folder(tmp_path):
    target = tmp_path / "model"
    script = f"""
    import os
    from eurobert_hf.hub import save_for_hub
    from eurobert_hf.modeling import EuroBertForMaskedLM
    from tests.hub_fixtures import tiny_model

    class KilledDuringSave:
        def save_pretrained(self, folder):
            os._exit(0)  # the process dies after the weights are written, before the save completes

    save_for_hub(tiny_model(EuroBertForMaskedLM), {str(target)!r}, tokenizer=KilledDuringSave())
    """
    run_python(script, tmp_path)
    assert not target.exists()
    staging = [tmp_path / name for name in _leftovers(tmp_path)]
    assert len(staging) == 1 and (staging[0] / "model.safetensors").exists()  # the partial save stays hidden
    with pytest.raises((OSError, ValueError)):  # transformers 4.56 reports a missing folder as a bad repo id
        AutoModelForMaskedLM.from_pretrained(target)


def test_atomic_directory_is_reusable_for_any_writer(tmp_path):
    with atomic_directory(tmp_path / "out") as staging:
        (staging / "a.txt").write_text("a")
        assert not (tmp_path / "out").exists()
    assert (tmp_path / "out" / "a.txt").read_text() == "a"


def test_remote_code_only_for_eurobert(tmp_path):
    llama = LlamaForCausalLM(
        LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2)
    )
    with pytest.raises(ValueError, match="exports EuroBERT's code"):
        save_for_hub(llama, tmp_path / "llama", remote_code=True)
    assert not (tmp_path / "llama").exists()
    folder = save_for_hub(llama, tmp_path / "llama")
    assert not (folder / "modeling_eurobert.py").exists()


def test_peft_model_must_be_merged_first(tmp_path):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(
        tiny_model(EuroBertForMaskedLM), peft.LoraConfig(target_modules=["q_proj", "v_proj"], r=2)
    )
    with pytest.raises(ValueError, match="merge_and_unload"):
        save_for_hub(model, tmp_path / "adapter")
    assert not (tmp_path / "adapter").exists()
    folder = save_for_hub(model.merge_and_unload(), tmp_path / "merged")
    assert (folder / "modeling_eurobert.py").exists() and not (folder / "adapter_config.json").exists()


def test_overwrite_never_follows_a_manifest_outside_the_folder(tmp_path):
    folder = save_for_hub(tiny_model(EuroBertForMaskedLM, seed=1), tmp_path / "model")
    outside = tmp_path / "outside.txt"
    outside.write_text("not the model's")
    (folder / MANIFEST_NAME).write_text(json.dumps({"files": ["../outside.txt", str(outside), ".", ""]}))
    save_for_hub(tiny_model(EuroBertForMaskedLM, seed=2), folder, overwrite=True)
    assert outside.read_text() == "not the model's"
    assert json.loads((folder / MANIFEST_NAME).read_text())["files"] == sorted(
        name for name in os.listdir(folder) if name != MANIFEST_NAME
    )
