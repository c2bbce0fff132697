"""Security properties of the commands and of the Hub helpers: the Hub token reaches the Hub client only."""

import ast
import json
import os
import pickle
import re
import secrets
import shlex

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
)

from eurobert_hf import ULDConfig
from eurobert_hf.cli import main
from eurobert_hf.hub import (
    EUROBERT_AUTO_MAP,
    EUROBERT_TASKS,
    REMOTE_CODE_FILES,
    remove_dangling_auto_map,
    render_eurobert_model_card,
    render_uld_model_card,
    save_for_hub,
    save_sentence_transformer,
)
from eurobert_hf.modeling import EuroBertForMaskedLM, EuroBertForSequenceClassification, EuroBertModel
from tests.hub_fixtures import last_json_line, run_python, run_without_plugin, tiny_model, tiny_tokenizer
from tests.hub_server import FakeHub
from tests.test_cli import (
    CLASSIFICATION_ROWS,
    DOCUMENTS,
    QA_PAIRS,
    TEACHER_MERGES,
    byte_level_tokenizer,
    tiny_causal_lm_dir,
    write_jsonl,
)

# Every command that can push, run in one fresh interpreter (the Hub client reads `HF_ENDPOINT` at import) with every
# library logging at its most verbose level into the captured output.
RUN_COMMANDS = """
import json, logging, sys
import huggingface_hub, transformers
from eurobert_hf.cli import main
from eurobert_hf.hub import EUROBERT_TASKS, render_eurobert_model_card, render_uld_model_card

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
transformers.logging.set_verbosity_debug()
huggingface_hub.logging.set_verbosity_debug()
codes = [main(argv) for argv in RUNS]
print("RESULT:" + json.dumps(codes))
"""


def _push_flags(token: str, repo_id: str) -> list[str]:
    return [
        "--push_to_hub", "--hub_model_id", repo_id, "--hub_token", token, "--hub_strategy", "checkpoint",
        "--save_strategy", "steps", "--save_steps", "1", "--max_steps", "2", "--per_device_train_batch_size", "2",
        "--use_cpu", "--report_to", "none", "--logging_steps", "1", "--disable_tqdm", "True", "--seed", "0",
    ]  # fmt: skip


@pytest.mark.slow  # one fresh interpreter that trains three tiny models: ~1 minute on 2 shared cores
def test_the_hub_token_reaches_only_the_hub_client(tmp_path):
    token = "hf_" + secrets.token_hex(16)
    eurobert = tmp_path / "eurobert"
    tiny_model(EuroBertForMaskedLM).save_pretrained(eurobert)
    tiny_tokenizer().save_pretrained(eurobert)
    student = tiny_causal_lm_dir(tmp_path / "student", byte_level_tokenizer(), seed=0)
    teacher = tiny_causal_lm_dir(tmp_path / "teacher", byte_level_tokenizer(TEACHER_MERGES, "</s>"), seed=1)
    # The base checkpoints point into other repositories, as Hub-era checkpoints and tokenizers do.
    _add_foreign_auto_maps(eurobert, HUB_ERA_EUROBERT_MAP)
    _add_foreign_auto_maps(tmp_path / "student", FOREIGN_CAUSAL_LM_MAP)
    documents = tmp_path / "docs.csv"
    documents.write_text("text\n" + "\n".join(f'"{document}"' for document in DOCUMENTS) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    runs = [
        ["finetune", "--model_name_or_path", str(eurobert), "--task", "text-classification",
         "--train_file", write_jsonl(tmp_path / "train.jsonl", CLASSIFICATION_ROWS), "--output_dir", str(out / "ft"),
         *_push_flags(token, "user/ft")],
        ["distill", "--model_name_or_path", student, "--teacher_model_name_or_path", teacher,
         "--train_file", write_jsonl(tmp_path / "pairs.jsonl", QA_PAIRS), "--output_dir", str(out / "distill"),
         *_push_flags(token, "user/distill")],
        ["pretrain", "--model_name_or_path", str(eurobert), "--train_file", str(documents), "--max_length", "24",
         "--output_dir", str(out / "pt"), *_push_flags(token, "user/pt")],
    ]  # fmt: skip

    with FakeHub() as hub:
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0"}
        output = run_python(f"RUNS = {runs!r}\n" + RUN_COMMANDS, tmp_path / "run", env=env, with_stderr=True)
    codes = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT:"))[len("RESULT:") :])
    assert codes == [0, 0, 0], output

    # The Trainer's checkpoint pushes and the final push all happened, authenticated with the token.
    for repo_id in ("user/ft", "user/distill", "user/pt"):
        files = hub.files(repo_id)
        assert {"config.json", "README.md", "training_args.bin", "last-checkpoint/training_args.bin"} <= set(files)
    writes = [request for request in hub.state.requests if request.method == "POST"]
    assert writes and all(request.authorization == f"Bearer {token}" for request in writes)

    # ... and it is in no byte of what was written locally or uploaded, pickles included, nor in any output line.
    needle = token.encode()
    local_files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.name == "training_args.bin" for path in local_files)
    leaks = [str(path) for path in local_files if needle in path.read_bytes()]
    leaks += [f"{repo_id}:{name}" for repo_id, repo in hub.state.repos.items() for name, content in repo.files.items()
              if needle in content]  # fmt: skip
    assert not leaks
    assert token not in output and token[3:] not in output

    # Nothing written or pushed (checkpoints included) names code outside its own folder.
    assert not code_references_outside(_folder_files(out))
    for repo_id, repo in hub.state.repos.items():  # every revision: the Trainer's checkpoint pushes included
        assert len(repo.revisions) > 2, repo_id
        for revision in repo.revisions:
            assert not code_references_outside(revision), (repo_id, sorted(revision))
    assert "modeling_eurobert.py" in hub.files("user/ft") and "modeling_eurobert.py" in hub.files("user/pt")


def test_a_pickled_uld_config_does_not_hold_the_hub_token(tmp_path):
    token = "hf_" + secrets.token_hex(16)
    config = ULDConfig(str(tmp_path), hub_token=token, report_to="none", use_cpu=True)
    torch.save(config, tmp_path / "training_args.bin")
    assert token.encode() not in (tmp_path / "training_args.bin").read_bytes()
    assert token.encode() not in pickle.dumps(config)
    # The object in memory keeps it, for the Trainer's own Hub calls.
    assert config.hub_token == token
    restored = pickle.loads(pickle.dumps(config))
    assert restored.hub_token is None and restored.uld_distillation_weight == config.uld_distillation_weight


@pytest.fixture(scope="module")
def eurobert_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eurobert")
    tiny_model(EuroBertForMaskedLM).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


def test_resume_command_is_shell_quoted_and_leaves_the_token_out(eurobert_dir, tmp_path, monkeypatch, capsys):
    token = "hf_" + secrets.token_hex(16)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    output_dir = tmp_path / 'it\'s a "run" $HOME'
    arguments = ["finetune", "--model_name_or_path", eurobert_dir, "--task", "text-classification",
                 "--train_file", write_jsonl(tmp_path / "train.jsonl", CLASSIFICATION_ROWS),
                 "--output_dir", str(output_dir), "--max_steps", "3", "--per_device_train_batch_size", "2",
                 "--use_cpu", "--report_to", "none", "--save_steps", "1", "--disable_tqdm", "True",
                 "--hub_token", token]  # fmt: skip
    training_step = Trainer.training_step

    def interrupted_third_step(self, *args, **kwargs):
        if self.state.global_step == 2:
            raise KeyboardInterrupt
        return training_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", interrupted_third_step)
    assert main(arguments) == 130
    err = capsys.readouterr().err
    assert token not in err
    command = err.strip().splitlines()[-1].strip()
    expected = ["eurobert-hf", *arguments[:-2], "--resume_from_checkpoint", str(output_dir / "checkpoint-2")]
    assert shlex.split(command) == expected
    # The token was lent to the Hub client for the command only.
    assert "HF_TOKEN" not in os.environ


def _python_blocks(card_text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card_text, flags=re.DOTALL)


@pytest.mark.parametrize("task", [*EUROBERT_TASKS, "uld"])
def test_quick_start_code_quotes_any_model_id(task):
    model_id = "user/we\"ird\\'id"
    if task == "uld":
        card = render_uld_model_card(model_id, base_model=None, teacher_model=None)
    else:
        card = render_eurobert_model_card(model_id, task=task)
    blocks = _python_blocks(str(card))
    assert blocks
    for block in blocks:
        strings = [node.value for node in ast.walk(ast.parse(block)) if isinstance(node, ast.Constant)]
        assert model_id in strings, block


# --- Supply chain: a saved folder names no code outside itself ------------------------------------------------------

FOREIGN_TOKENIZER_MAP = {"AutoTokenizer": ["other/repo--tokenization_x.TokX", "other/repo--tokenization_x.TokXFast"]}


def _folder_files(folder) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def code_references_outside(files: dict[str, bytes]) -> list[str]:
    """Every `auto_map` reference of the JSON files (relative path -> content) that is not a module file next to it."""
    outside = []
    for name, content in files.items():
        if not name.endswith(".json") or b'"auto_map"' not in content:
            continue
        folder = name.rpartition("/")[0]
        for reference in json.loads(content)["auto_map"].values():
            for item in reference if isinstance(reference, list) else [reference]:
                module = f"{folder}/{item.rsplit('.', 1)[0]}.py".lstrip("/") if item else None
                if item is not None and ("--" in item or module not in files):
                    outside.append(f"{name}: {item}")
    return outside


def _add_foreign_auto_maps(folder, config_map: dict) -> None:
    """Makes a saved model look like a Hub-era checkpoint: `auto_map`s into another repository."""
    for name, auto_map in (("config.json", config_map), ("tokenizer_config.json", FOREIGN_TOKENIZER_MAP)):
        path = folder / name
        content = json.loads(path.read_text())
        path.write_text(json.dumps({**content, "auto_map": auto_map}))


HUB_ERA_EUROBERT_MAP = {
    "AutoConfig": "EuroBERT/EuroBERT-210m--configuration_eurobert.EuroBertConfig",
    "AutoModel": "EuroBERT/EuroBERT-210m--modeling_eurobert.EuroBertModel",
    "AutoModelForMaskedLM": "EuroBERT/EuroBERT-210m--modeling_eurobert.EuroBertForMaskedLM",
}


@pytest.fixture(scope="module")
def hub_era_classifier(tmp_path_factory):
    """A EuroBERT classifier and its tokenizer, loaded from a folder whose JSON files point into other repositories."""
    folder = tmp_path_factory.mktemp("hub_era")
    tiny_model(EuroBertForSequenceClassification, num_labels=2).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    _add_foreign_auto_maps(folder, HUB_ERA_EUROBERT_MAP)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert (
        "--" in json.dumps(model.config.auto_map) and "auto_map" in AutoTokenizer.from_pretrained(folder).init_kwargs
    )
    return model, AutoTokenizer.from_pretrained(folder)


def _save_every_way(model, tokenizer, root) -> dict:
    """The folders written by each save path a user may take (the tokenizer, which transformers saves as loaded, only
    where eurobert-hf saves it)."""
    folders = {name: root / name for name in ("save_pretrained", "trainer", "save_for_hub")}
    model.save_pretrained(folders["save_pretrained"])
    trainer_args = TrainingArguments(str(root / "run"), report_to="none", use_cpu=True)
    Trainer(model=model, args=trainer_args).save_model(str(folders["trainer"]))
    save_for_hub(model, folders["save_for_hub"], tokenizer=tokenizer)
    return folders


def test_every_save_path_holds_the_code_its_auto_map_names(hub_era_classifier, tmp_path):
    model, tokenizer = hub_era_classifier
    folders = _save_every_way(model, tokenizer, tmp_path)
    for name, folder in folders.items():
        files = _folder_files(folder)
        assert not code_references_outside(files), name
        assert json.loads(files["config.json"])["auto_map"] == EUROBERT_AUTO_MAP, name
        assert set(REMOTE_CODE_FILES) <= set(files), name
    assert "auto_map" not in json.loads((folders["save_for_hub"] / "tokenizer_config.json").read_text())
    # A config saved alone names its own code only.
    model.config.save_pretrained(tmp_path / "config_only")
    files = _folder_files(tmp_path / "config_only")
    assert not code_references_outside(files)
    assert json.loads(files["config.json"])["auto_map"] == {"AutoConfig": "configuration_eurobert.EuroBertConfig"}


def test_sentence_transformers_save_holds_the_remote_code(tmp_path):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    source = save_sentence_transformer(tiny_model(EuroBertModel), tiny_tokenizer(), tmp_path / "source")
    sentence_transformers.SentenceTransformer(str(source), device="cpu").save(str(tmp_path / "resaved"))
    files = _folder_files(tmp_path / "resaved")
    assert not code_references_outside(files)
    assert json.loads(files["config.json"])["auto_map"] == EUROBERT_AUTO_MAP
    assert set(REMOTE_CODE_FILES) <= set(files)


LOAD_EVERY_SAVE = """
import json
import torch
from transformers import AutoModelForSequenceClassification

results = {}
for name, folder in FOLDERS.items():
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        results[name] = [type(model).__module__, model(input_ids=torch.tensor([IDS])).logits.tolist()]
if ST_FOLDER is not None:
    from sentence_transformers import SentenceTransformer
    results["sentence-transformers"] = SentenceTransformer(ST_FOLDER, trust_remote_code=True).encode(["the moon"]).tolist()
print(json.dumps(results))
"""


@pytest.mark.slow  # a fresh interpreter: ~15 seconds on 2 shared cores
def test_every_save_path_loads_without_the_plugin(hub_era_classifier, tmp_path):
    model, tokenizer = hub_era_classifier
    folders = {name: str(path) for name, path in _save_every_way(model, tokenizer, tmp_path).items()}
    ids = [2, 5, 6, 7, 3]
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([ids])).logits
    st_folder, expected_embedding = None, None
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        pass
    else:
        encoder = tiny_model(EuroBertModel)
        source = save_sentence_transformer(encoder, tiny_tokenizer(), tmp_path / "st_source")
        embedder = SentenceTransformer(str(source), device="cpu")
        embedder.save(str(tmp_path / "st"))
        st_folder, expected_embedding = str(tmp_path / "st"), embedder.encode(["the moon"])
    script = f"FOLDERS = {folders!r}\nIDS = {ids!r}\nST_FOLDER = {st_folder!r}\n" + LOAD_EVERY_SAVE
    results = last_json_line(run_without_plugin(script, tmp_path / "load"))
    for name in folders:
        module, logits = results[name]
        assert module.startswith("transformers_modules"), (name, module)
        torch.testing.assert_close(torch.tensor(logits), expected, rtol=0, atol=1e-5)
    if st_folder is not None:
        torch.testing.assert_close(
            torch.tensor(results["sentence-transformers"]), torch.tensor(expected_embedding), rtol=0, atol=1e-5
        )


FOREIGN_CAUSAL_LM_MAP = {
    "AutoConfig": "other/repo--configuration_x.XConfig",
    "AutoModelForCausalLM": "modeling_x.XForCausalLM",  # a file the folder does not hold
}


def test_other_models_lose_foreign_and_dangling_auto_map_entries(tmp_path):
    tokenizer = byte_level_tokenizer()
    student = tiny_causal_lm_dir(tmp_path / "student", tokenizer, seed=0)
    _add_foreign_auto_maps(tmp_path / "student", FOREIGN_CAUSAL_LM_MAP)
    model = AutoModelForCausalLM.from_pretrained(student)
    folder = save_for_hub(model, tmp_path / "saved", tokenizer=AutoTokenizer.from_pretrained(student))
    files = _folder_files(folder)
    assert not code_references_outside(files)
    assert "auto_map" not in json.loads(files["config.json"])
    assert "auto_map" not in json.loads(files["tokenizer_config.json"])


def test_a_tokenizer_keeps_the_remote_code_it_holds(tmp_path):
    folder = tmp_path / "tokenizer"
    tiny_tokenizer().save_pretrained(folder)
    (folder / "tokenization_x.py").write_text("")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["tokenization_x.TokX", "other/repo--tokenization_x.TokXFast"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    remove_dangling_auto_map(folder)
    assert json.loads((folder / "tokenizer_config.json").read_text())["auto_map"] == {
        "AutoTokenizer": ["tokenization_x.TokX", None]
    }


def test_a_card_advising_trust_remote_code_needs_code_in_the_folder(tmp_path):
    model = tiny_model(EuroBertForSequenceClassification, num_labels=2)
    card = render_eurobert_model_card("user/x", model=model, remote_code=True)
    with pytest.raises(ValueError, match="holds no model code"):
        save_for_hub(model, tmp_path / "x", model_card=card, remote_code=False)
    assert not (tmp_path / "x").exists()
