"""Configuration and planning: the config check, the grid, the training jobs, their cost.

Torch-free: every snakemake invocation imports these to parse the rules.
"""
