"""Push to and pull from a stand-in of the Hub's HTTP API through the real huggingface_hub client.

The pushes and pulls run in fresh interpreters with `HF_ENDPOINT` pointing at `tests/hub_server.py` (the client reads
it at import), the pulls without eurobert_hf, as a user who only has transformers would.
"""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from eurobert_hf.hub import push_to_hub, render_eurobert_model_card
from eurobert_hf.modeling import EuroBertForSequenceClassification
from tests.hub_fixtures import run_python, run_without_plugin, tiny_model, tiny_tokenizer
from tests.hub_server import FakeHub

TOKEN = "hf_StandInHubWriteToken0123456789abcdef"
TEXTS = ["EuroBERT speaks many languages.", "Marie Curie worked in Paris ."]
EUROBERT_REPO = "user/eurobert-cls"
ULD_REPO = "user/smollm-uld"
PLAIN_REPO = "user/eurobert-plain"

PUSH = """
import json, logging, sys
import torch
import transformers, huggingface_hub
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

import eurobert_hf
from eurobert_hf.hub import push_to_hub, render_eurobert_model_card, render_uld_model_card

# Everything the libraries log, at the most verbose level, goes to the captured output that the test searches.
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
transformers.logging.set_verbosity_debug()
huggingface_hub.logging.set_verbosity_debug()

classifier = AutoModelForSequenceClassification.from_pretrained(FOLDERS["eurobert"])
tokenizer = AutoTokenizer.from_pretrained(FOLDERS["eurobert"])
card = render_eurobert_model_card(
    EUROBERT_REPO, model=classifier, base_model="EuroBERT/EuroBERT-210m", datasets=["nyu-mll/glue"],
    hyperparameters={"learning_rate": 3e-5},
)
commit = push_to_hub(classifier, EUROBERT_REPO, tokenizer=tokenizer, model_card=card, token=TOKEN, private=True)

student = AutoModelForCausalLM.from_pretrained(FOLDERS["uld"])
uld_card = render_uld_model_card(
    ULD_REPO, base_model="HuggingFaceTB/SmolLM2-135M-Instruct", teacher_model="google/gemma-3-270m",
    license="apache-2.0", language=["en", "de"], hyperparameters={"uld_distillation_weight": 1.5},
)
push_to_hub(student, ULD_REPO, tokenizer=tokenizer, model_card=uld_card, token=TOKEN)

# The standard transformers API keeps working (no card of ours); the folder still holds the code it names.
classifier.push_to_hub(PLAIN_REPO, token=TOKEN)

try:
    push_to_hub(student, ULD_REPO, model_card=ModelCard("---\\nlicense: apache\\n---\\n# bad"), token=TOKEN)
except ValueError as error:  # huggingface_hub turns the Hub's 400 into a ValueError
    rejected = str(error)
else:
    rejected = None
print("RESULT:" + json.dumps({"commit": commit.oid, "rejected": rejected}))
"""

PULL = """
import json
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained(EUROBERT_REPO)
batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
classifier = AutoModelForSequenceClassification.from_pretrained(EUROBERT_REPO, trust_remote_code=True).eval()
student = AutoModelForCausalLM.from_pretrained(ULD_REPO).eval()
with torch.no_grad():
    classifier_logits = classifier(**batch).logits
    student_logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
cards = {repo: ModelCard.load(repo).data.to_dict() for repo in (EUROBERT_REPO, ULD_REPO)}
print("RESULT:" + json.dumps({
    "classifier_module": type(classifier).__module__,
    "classifier_logits": classifier_logits.tolist(),
    "student_logits_sum": student_logits.double().sum().item(),
    "cards": cards,
}))
"""


def _result(output: str) -> dict:
    return json.loads(next(line for line in output.splitlines() if line.startswith("RESULT:"))[len("RESULT:") :])


def _constants(**values) -> str:
    return "".join(f"{name} = {value!r}\n" for name, value in values.items())


@pytest.fixture
def hub():
    with FakeHub() as server:
        yield server


@pytest.mark.slow  # fresh interpreters: tens of seconds on 2 shared cores
def test_push_then_pull_without_plugin(hub, tmp_path):
    tokenizer = tiny_tokenizer()
    classifier = tiny_model(EuroBertForSequenceClassification, num_labels=2, classifier_pooling="bos")
    torch.manual_seed(1)
    student = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    folders = {"eurobert": str(tmp_path / "eurobert"), "uld": str(tmp_path / "uld")}
    classifier.save_pretrained(folders["eurobert"])
    tokenizer.save_pretrained(folders["eurobert"])
    student.save_pretrained(folders["uld"])
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected_logits = classifier(**batch).logits
        expected_student_sum = student(**batch).logits.double().sum().item()

    env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0"}
    constants = _constants(
        TOKEN=TOKEN,
        FOLDERS=folders,
        EUROBERT_REPO=EUROBERT_REPO,
        ULD_REPO=ULD_REPO,
        PLAIN_REPO=PLAIN_REPO,
        TEXTS=TEXTS,
    )
    push_output = run_python(constants + PUSH, tmp_path / "push", env=env, with_stderr=True)
    pushed = _result(push_output)
    assert "license" in pushed["rejected"], "the stand-in Hub must refuse a card with an unknown licence"

    pull_output = run_without_plugin(constants + PULL, tmp_path / "pull", env=env, with_stderr=True)
    pulled = _result(pull_output)

    # What the Hub holds: weights, tokenizer, card and self-contained remote code with the full auto_map.
    files = hub.files(EUROBERT_REPO)
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
        "configuration_eurobert.py",
        "modeling_eurobert.py",
    } <= set(files)
    assert len(json.loads(files["config.json"])["auto_map"]) == 7
    assert hub.state.repos[EUROBERT_REPO].head == pushed["commit"]
    plain_files = hub.files(PLAIN_REPO)
    assert "model.safetensors" in plain_files and "modeling_eurobert.py" in plain_files
    assert len(json.loads(plain_files["config.json"])["auto_map"]) == 7
    assert "configuration_eurobert.py" not in hub.files(ULD_REPO)

    # Loaded by a user without eurobert_hf: same outputs, complete cards.
    assert pulled["classifier_module"].startswith("transformers_modules")
    torch.testing.assert_close(torch.tensor(pulled["classifier_logits"]), expected_logits, rtol=0, atol=1e-5)
    assert abs(pulled["student_logits_sum"] - expected_student_sum) <= 1e-6 * max(1.0, abs(expected_student_sum))
    eurobert_card, uld_card = pulled["cards"][EUROBERT_REPO], pulled["cards"][ULD_REPO]
    assert eurobert_card["pipeline_tag"] == "text-classification" and eurobert_card["license"] == "apache-2.0"
    assert eurobert_card["base_model"] == "EuroBERT/EuroBERT-210m" and len(eurobert_card["language"]) == 15
    assert uld_card["pipeline_tag"] == "text-generation" and "uld" in uld_card["tags"]
    assert uld_card["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"

    # The token authenticated the writes, and appears in no file, card or log line.
    writes = [request for request in hub.state.requests if request.method == "POST" and "/commit/" in request.path]
    assert writes and all(request.authorization == f"Bearer {TOKEN}" for request in writes)
    for repo in hub.state.repos.values():
        assert not any(TOKEN.encode() in content for content in repo.files.values())
    assert TOKEN not in push_output and TOKEN not in pull_output
    assert "Bearer" not in push_output  # debug logs of the HTTP clients never print the header either
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_push_refuses_a_folder_that_contains_the_token(tmp_path):
    model = tiny_model(EuroBertForSequenceClassification, num_labels=2)
    model.config.leaked = TOKEN
    card = render_eurobert_model_card("user/leak", model=model)
    with pytest.raises(ValueError, match="contains your Hugging Face access token"):
        push_to_hub(model, "user/leak", model_card=card, token=TOKEN)
