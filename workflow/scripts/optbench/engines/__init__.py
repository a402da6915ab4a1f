"""Training and its engines: the job's front door (job.py), the per-run loop and the
batched engine behind one ``train`` (group_training.py), the numerics pins.

Imported by the training jobs (workflow/scripts/train.py), which import torch.
"""
