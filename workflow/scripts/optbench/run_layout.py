"""Config key run_files: where a training job writes its runs.

- ``per_run`` (the default): a TSV and a JSON sidecar per run (runfiles.py),
  the format the docs and users' scripts read; every run file is checked,
  reused and found by the run index (reuse.py) on its own.
- ``per_job``: one run file per training job (jobfiles.py), a job writes O(1)
  files whatever its number of runs. For grids of 10^5 runs and more, where
  two small files per run (each fsynced and renamed into place) cost more
  than training them; the analysis reads the job files. Runs are reused
  from their own job's last file only (not through the run index), and
  a packed layout is needed (not job_scope cell with seeds_per_job 1).
"""

PER_RUN = "per_run"
PER_JOB = "per_job"
LAYOUTS = (PER_RUN, PER_JOB)
