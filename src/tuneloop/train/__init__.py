"""Train stage (`tuneloop train`): our own loop over PyTorch + transformers + peft (`trainer.train`).

Objectives (`objectives.py`: SFT, DPO) supply batches, the loss and validation; methods (`methods/`:
LoRA, DoRA, QLoRA, full) decide which weights train. It reads a data stage folder and writes a train
run folder (adapter or model, metrics, checkpoints, manifest); it imports no other stage.
"""
