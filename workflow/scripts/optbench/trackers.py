"""A study's runs exported to the experiment trackers the field publishes in.

- Weights & Biases, **offline**: one W&B run per training run, with its
  settings as the run's config and its curves (``train_loss``, ``lr``,
  ``evaluations`` per step; ``heldout_loss``, ``heldout_accuracy`` at the
  held-out evaluations) as its history, written as local files under
  ``<out>/wandb/offline-run-*`` for a later ``wandb sync``. Nothing goes to the
  network: the mode is set to offline before wandb is imported.
- TensorBoard: one event-file folder per run,
  ``<out>/<problem>/<loss>/<optimizer>/<variant>/seed<seed>``, with the same
  scalars and the settings as a text summary (``tensorboard --logdir <out>``).

The runs are read from the study folder's files (TSV, sidecar); the optional
packages are in requirements-trackers.txt.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from optbench import runfiles

# A run's path in the study folder names it: runs/<problem>/<loss>/<optimizer>/<variant>/seedN.tsv
_RUN_PATH = re.compile(
    r"runs/(?P<problem>[^/]+)/(?P<loss>[^/]+)/(?P<optimizer>[^/]+)/"
    r"(?P<variant>[^/]+)/seed(?P<seed>\d+)\.tsv"
)
# Sidecar keys that describe the run's settings (the rest is how and where it ran).
SETTINGS_KEYS = ("problem", "loss", "optimizer", "steps", "engine", "settings_sha256")
SETTINGS_KEYS += ("torch_version", "device")


class TrackerError(RuntimeError):
    """An export cannot run; the message names the fix."""


@dataclass(frozen=True)
class TrackedRun:
    """One run of the study, read from its files."""

    problem: str
    loss: str
    optimizer: str
    variant: str
    seed: int
    config: dict
    losses: list[float]
    evaluations: list[int]
    rates: list[float | None]
    heldout: list[dict]

    @property
    def name(self) -> str:
        return f"{self.problem}/{self.loss}/{self.optimizer}/{self.variant}/seed{self.seed}"

    def history(self) -> list[tuple[int, dict]]:
        """(step, metrics) in step order: the per-step curve and the held-out points
        (a held-out step counts steps done, so the last one follows the last step)."""
        rows: dict[int, dict] = {}
        for step, (loss, count, rate) in enumerate(
            zip(self.losses, self.evaluations, self.rates, strict=True)
        ):
            rows[step] = {"train_loss": loss, "evaluations": count}
            if rate is not None:
                rows[step]["lr"] = rate
        for point in self.heldout:
            values = {
                key: float(point[key])
                for key in ("heldout_loss", "heldout_accuracy")
                if point.get(key) is not None
            }
            rows.setdefault(int(point["step"]), {}).update(values)
        return sorted(rows.items())


def read_runs(study) -> list[TrackedRun]:
    """Every run under the study folder's runs/, with its sidecar's settings."""
    study = Path(study)
    runs = []
    for tsv in sorted((study / "runs").rglob("seed*.tsv")):
        found = _RUN_PATH.fullmatch(tsv.relative_to(study).as_posix())
        if found is None:  # a held-out table, or a stray file
            continue
        sidecar = json.loads(tsv.with_suffix(".json").read_text(encoding="utf-8"))
        losses, evaluations, rates = runfiles.read_run_rows(tsv)
        fields = found.groupdict()
        config = {**fields, "seed": int(fields["seed"])}
        config["settings"] = {key: sidecar.get(key) for key in SETTINGS_KEYS}
        config["settings"]["numerics_mode"] = (sidecar.get("numerics") or {}).get("mode")
        runs.append(
            TrackedRun(
                **{key: fields[key] for key in ("problem", "loss", "optimizer", "variant")},
                seed=int(fields["seed"]),
                config=config,
                losses=losses,
                evaluations=evaluations,
                rates=rates,
                heldout=sidecar.get("heldout_curve") or [],
            )
        )
    if not runs:
        raise TrackerError(
            f"{study / 'runs'}: no run files. Fix: give the study's folder (results/ or "
            "results/<study>/) after the pipeline has run."
        )
    return runs


def _import(module: str, extra: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise TrackerError(
            f"{extra} is not installed. Fix: pip install -r requirements-trackers.txt"
        ) from None


def export_wandb(runs: list[TrackedRun], out, project: str) -> list[Path]:
    """One offline W&B run per training run under ``out``/wandb; returns their folders."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Before wandb reads its environment: files only, under ``out``, nothing printed.
    os.environ["WANDB_MODE"] = "offline"
    os.environ["WANDB_DIR"] = str(out)
    os.environ["WANDB_SILENT"] = "true"
    # Its settings, cache and staging files too, unless the user chose where (not
    # in a folder named .wandb: wandb would then write its runs there).
    for variable, folder in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache")):
        os.environ.setdefault(variable, str(out / "wandb-home" / folder))
    os.environ.setdefault("WANDB_DATA_DIR", str(out / "wandb-home" / "data"))
    wandb = _import("wandb", "wandb (Weights & Biases)")
    settings = wandb.Settings(
        mode="offline",
        console="off",
        save_code=False,
        disable_git=True,
        x_disable_stats=True,
        x_disable_meta=True,
        silent=True,
    )
    folders = []
    for run in runs:
        tracked = wandb.init(
            project=project,
            name=run.name,
            group=f"{run.problem}/{run.loss}",
            job_type=run.optimizer,
            config=run.config,
            dir=str(out),
            reinit="create_new",
            settings=settings,
        )
        for step, metrics in run.history():
            tracked.log(metrics, step=step)
        folders.append(Path(tracked.dir).parent)
        tracked.finish()
    return folders


def export_tensorboard(runs: list[TrackedRun], out) -> list[Path]:
    """One TensorBoard event-file folder per run under ``out``; returns the folders."""
    _import("tensorboard", "tensorboard")
    tensorboard = _import("torch.utils.tensorboard", "torch's TensorBoard writer")
    folders = []
    for run in runs:
        folder = Path(out, run.problem, run.loss, run.optimizer, run.variant, f"seed{run.seed}")
        writer = tensorboard.SummaryWriter(log_dir=str(folder))
        writer.add_text(
            "settings", "    " + json.dumps(run.config, indent=1).replace("\n", "\n    ")
        )
        for step, metrics in run.history():
            for name, value in metrics.items():
                writer.add_scalar(name, value, step)
        writer.close()
        folders.append(folder)
    return folders
