"""Training stage: supervised fine-tuning with LoRA on prepared chat data (`sft.train`)."""
