"""LoRA fine-tuning for every backend: target modules read from the model, training on a path where the adapters
really run, peft adapter directories, and loading (merging) adapters for generation."""
