"""Regenerate docs/overview.png (the README's figure) from the default config, or check it.

    python3 tools/overview_figure.py           # rewrite docs/overview.png
    python3 tools/overview_figure.py --check   # exit 1 when docs/overview.png is stale

The figure is the pipeline's ``results/figures/overview.png`` for config.yaml,
trained on the CPU. To make it in seconds, every run is trained in this one
process with the pipeline's own code (training, run files, per-cell summaries,
combine step, figures), in the order the pipeline uses; tests/test_docs_figure.py
checks that this gives the pipeline's figure and that the committed file is
current. Snakemake gives the same file:

    python3 -m snakemake --cores 4 --config device=cpu && cp results/figures/overview.png docs/
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))

from optbench import runfiles  # noqa: E402
from optbench.engines import numerics  # noqa: E402
from optbench.planning import settings  # noqa: E402
from optbench.reporting import analysis, figures, summary  # noqa: E402

# The figure is made in the portable mode, as the pipeline's default, so that
# it is the same on every x86-64 machine (pinned before torch is imported).
numerics.pin("portable")

CONFIG = REPO / "config.yaml"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
FIGURE = REPO / "docs" / "overview.png"


def draw(config_path: Path, png_path: Path, workdir: Path) -> None:
    """The pipeline's overview figure for ``config_path``, runs trained on the CPU.

    Evaluation seeds only: for a config without sweeps (config.yaml) that is
    every run, and each optimizer's one variant is the selected one.
    """
    import torch

    from optbench.engines import training

    experiment = settings.validate(
        yaml.safe_load(Path(config_path).read_text()), SCHEMA, problems_dir=REPO / "problems"
    )
    if experiment.tuning_seeds:
        raise SystemExit(f"{config_path}: a config with tuning seeds needs the pipeline itself")
    pattern = str(
        workdir / "runs" / "{problem}" / "{loss}" / "{optimizer}" / "{variant}" / "seed{seed}.tsv"
    )
    threads, mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    numerics.apply("portable", torch)  # as a training job does
    steps = {problem.steps for problem in experiment.problems.values()}
    if len(steps) != 1:
        raise SystemExit(f"{config_path}: problems with different steps need the pipeline itself")
    try:
        run_paths = []
        for cell in experiment.cells():
            spec = experiment.run_spec(cell) | {
                "device": "cpu",
                "problems_dir": str(REPO / "problems"),
            }
            for seed in experiment.seeds:
                result = training.train_one(spec, seed, torch.device("cpu"))
                tsv = pattern.format(**vars(cell), seed=seed)
                runfiles.write_run(
                    tsv, result.losses, tsv[:-4] + ".json", {"seed": seed}, result.evaluations
                )
                run_paths.append(tsv)
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = mkldnn
    analysis.summarize_runs(run_paths, pattern, steps.pop(), workdir / "summary")
    table = summary.selected_rows(
        figures.read_table(workdir / "summary" / "steps.tsv"),
        figures.read_table(workdir / "summary" / "selection.tsv"),
    )
    panels = list(dict.fromkeys((cell.problem, cell.loss) for cell in experiment.cells()))
    figures.plot_overview(table, panels, experiment.band, [png_path])


def difference(expected: Path, actual: Path) -> str | None:
    """None when the two PNGs show the same pixels, else what differs."""
    import matplotlib.image

    if expected.read_bytes() == actual.read_bytes():
        return None
    a, b = matplotlib.image.imread(expected), matplotlib.image.imread(actual)
    if a.shape != b.shape:
        return f"size {a.shape[1]}x{a.shape[0]} px, the code draws {b.shape[1]}x{b.shape[0]} px"
    # Pixels, not bytes: PNG metadata and compression may differ between builds.
    changed = int(np.count_nonzero(np.abs(a - b).max(axis=-1) > 0))
    if changed == 0:
        return None
    return f"{changed} of {a.shape[0] * a.shape[1]} pixels differ from what the code draws"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether it is stale")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        fresh = Path(workdir) / "overview.png"
        draw(CONFIG, fresh, Path(workdir))
        if args.check:
            problem = difference(FIGURE, fresh) if FIGURE.exists() else "missing"
            if problem:
                print(
                    f"{FIGURE.relative_to(REPO)} is stale: {problem}. Regenerate it with "
                    "python3 tools/overview_figure.py",
                    file=sys.stderr,
                )
                return 1
            print(f"{FIGURE.relative_to(REPO)} is what the code draws")
            return 0
        with runfiles.atomic_path(FIGURE) as temporary:
            temporary.write_bytes(fresh.read_bytes())
        print(f"wrote {FIGURE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
