"""Cost of a `ULDTrainer` step on a teacher cache against an `SFTTrainer` step of the same student, same data.

The student has SmolLM2-135M's shape (random weights) and GPT-2's real tokenizer; the teacher cache comes from a
small random teacher with Mistral's real SentencePiece tokenizer (only the cached probabilities matter for the
student's step). Every trainer gets the same batches; the median step time after two warm-up steps is reported.

    python benchmarks/bench_uld_trainer.py            # SmolLM2-135M shape, fp32 CPU, 2 threads
    python benchmarks/bench_uld_trainer.py --quick    # a 4-layer, 256-wide student

Target (issue 3): a cached-teacher ULD step costs <= 1.15x an SFT step.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from eurobert_hf.trainers import ULDConfig, ULDTrainer  # noqa: E402
from eurobert_hf.trainers.teacher_cache import cache_teacher_probs  # noqa: E402
from eurobert_hf.trainers.uld_data import prepare_uld_dataset  # noqa: E402
from tests.tokenizer_assets import gpt2_tokenizer, mistral_tokenizer  # noqa: E402

SMOLLM2_135M = dict(
    hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3
)
QUICK = dict(
    hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4
)


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.start)


def causal_lm(vocab_size: int, shape: dict, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, tie_word_embeddings=True, **shape))


def median_step(trainer) -> float:
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    return statistics.median(timer.times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = QUICK if args.quick else SMOLLM2_135M

    student_tokenizer, teacher_tokenizer = gpt2_tokenizer(), mistral_tokenizer()
    words = "the quick brown fox jumps over the lazy dog while the cat sleeps under a warm sun and birds sing".split()
    rows = 8 * (args.steps + 1)
    prompts = [" ".join(words[(i + j) % len(words)] for j in range(40)) for i in range(rows)]
    completions = [" " + " ".join(words[(3 * i + j) % len(words)] for j in range(48)) for i in range(rows)]
    raw = Dataset.from_dict({"prompt": prompts, "completion": completions})
    common = dict(
        bf16=False,
        report_to="none",
        gradient_checkpointing=False,
        use_cpu=True,
        per_device_train_batch_size=8,
        max_steps=args.steps,
        logging_steps=1000,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        max_length=256,
    )
    print(
        f"# ULD trainer step vs SFT step: student {shape}, vocab {len(student_tokenizer)}, batch 8, "
        f"{args.threads} threads, torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory() as out:
        sft = SFTTrainer(
            causal_lm(len(student_tokenizer), shape, 0),
            args=SFTConfig(f"{out}/sft", **common),
            train_dataset=raw,
            processing_class=student_tokenizer,
        )
        results = {"sft": median_step(sft)}
        prepared = prepare_uld_dataset(raw, student_tokenizer, teacher_tokenizer, max_length=256)
        teacher = causal_lm(len(teacher_tokenizer), QUICK, 1)
        for top_k in (None, 256):
            cached = cache_teacher_probs(teacher, prepared, top_k=top_k)
            uld = ULDTrainer(
                causal_lm(len(student_tokenizer), shape, 0),
                args=ULDConfig(f"{out}/uld-{top_k}", uld_top_k=top_k, **common),
                train_dataset=cached,
                processing_class=student_tokenizer,
            )
            results[f"uld cached, top_k={top_k}"] = median_step(uld)
    for name, seconds in results.items():
        print(f"{name:24s} {seconds * 1000:9.1f} ms/step   {seconds / results['sft']:5.2f}x SFT")
    ratio = results["uld cached, top_k=None"] / results["sft"]
    print(f"SUMMARY: cached-teacher ULD step = {ratio:.2f}x SFT step (target <= 1.15x)")


if __name__ == "__main__":
    main()
