# /// script
# dependencies = ["eurobert-hf"]
# ///
"""
Universal Logit Distillation (ULD) of a causal LM from a teacher with another tokenizer.

TRL's `sft.py` recipe where `SFTConfig`/`SFTTrainer` are replaced by `ULDConfig`/`ULDTrainer` and a teacher is added
with `--teacher_model_name_or_path`; every `SFTConfig`, `ULDConfig` and `ModelConfig` field is a flag, and
`--config recipe.yaml` works.

The paper's setup (teacher Mistral-7B-Instruct, student Pythia-410m, λ = 1.5):

```
accelerate launch examples/uld.py \
    --model_name_or_path EleutherAI/pythia-410m \
    --teacher_model_name_or_path mistralai/Mistral-7B-Instruct-v0.2 \
    --dataset_name trl-lib/Capybara \
    --learning_rate 1e-5 \
    --per_device_train_batch_size 4 \
    --gradient_accumulation_steps 4 \
    --output_dir pythia-410m-uld
```

Offline, on the tiny local models of the tests (the models in `MODELS/student` and `MODELS/teacher`, each saved with
its own tokenizer, and a folder `DATA/` holding a `train.jsonl` with `prompt` and `completion` columns):

```
python examples/uld.py \
    --model_name_or_path MODELS/student --teacher_model_name_or_path MODELS/teacher \
    --dataset_name DATA --output_dir out --max_steps 2 --per_device_train_batch_size 2 \
    --bf16 False --gradient_checkpointing False --use_cpu --report_to none --dtype float32
```
"""

from datasets import load_dataset
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from eurobert_hf import ULDConfig, ULDTrainer


def main(script_args: ScriptArguments, training_args: ULDConfig, model_args: ModelConfig) -> None:
    model_init_kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    # The teacher loads with these too (without the revision), unless `--teacher_model_init_kwargs` is given.
    training_args.model_init_kwargs = {**model_init_kwargs, **(training_args.model_init_kwargs or {})}

    dataset = load_dataset(
        script_args.dataset_name, name=script_args.dataset_config, streaming=script_args.dataset_streaming
    )

    trainer = ULDTrainer(
        model=model_args.model_name_or_path,
        args=training_args,  # the teacher is `--teacher_model_name_or_path`
        train_dataset=dataset[script_args.dataset_train_split],
        eval_dataset=dataset[script_args.dataset_test_split] if training_args.eval_strategy != "no" else None,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    trainer.save_model(training_args.output_dir)
    trainer.create_model_card(dataset_name=script_args.dataset_name)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)


if __name__ == "__main__":
    parser = TrlParser((ScriptArguments, ULDConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config()
    main(script_args, training_args, model_args)
