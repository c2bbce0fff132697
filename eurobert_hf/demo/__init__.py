"""The `eurobert-hf demo`: cross-tokenizer ULD distillation of Gemma-3-270M into SmolLM2-135M-Instruct, offline."""
