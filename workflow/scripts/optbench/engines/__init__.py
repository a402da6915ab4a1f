"""Training and its engines: the per-run loop, the batched engine, the numerics pins.

Imported by the training jobs (workflow/scripts/train.py), which import torch.
"""
