"""Logic of the optimizer-comparison pipeline.

The modules are small and import only what they need: ``settings`` and
``torch_catalog`` are torch-free (they run inside every ``snakemake``
invocation), ``training`` imports torch and nothing heavier (it runs in every
training job), ``summary`` and ``figures`` hold the numpy/scipy/matplotlib work.
"""
