"""Benchmark: prints each measured ratio beside its goal, all measured in one run.

Run by hand from the repository root (not by CI; about 15 minutes, --quick
about 5; section million, 10^6 runs end to end, only when named: about 20 more):

    python3 tools/benchmark.py                        # everything
    python3 tools/benchmark.py --quick                # fewer repetitions, smaller subsets
    python3 tools/benchmark.py --only default engines # some sections (see --help)

Every figure compares two things measured here, side by side, on this machine,
so the ratios hold even where absolute times are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow" / "scripts"
sys.path.insert(0, str(SCRIPTS))

ROWS: list[tuple[str, str, str]] = []


def report(name: str, value: str, goal: str) -> None:
    ROWS.append((name, value, goal))
    print(f"  {name}: {value}   (goal: {goal})", flush=True)


def timed(command, cwd=None, env=None) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def snakemake(workdir: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        *args,
    ]


IN_PROCESS = textwrap.dedent(
    """
    # The floor: one Python process doing what the pipeline does, through the
    # same library entry points as the training job and the analysis scripts.
    import json, sys, time
    sys.path.insert(0, {scripts!r})
    import torch
    from optbench.reporting import figures, summary
    from optbench import runfiles
    from optbench.planning import settings
    from optbench.engines import training
    import yaml
    out = {out!r}
    experiment = settings.validate(yaml.safe_load(open({config!r})), {schema!r})
    torch.set_num_threads(1)
    device = training.resolve_device(experiment.device)
    runs = []
    for cell in experiment.cells():
        spec = experiment.run_spec(cell)
        for seed in experiment.seeds:
            result = training.train_one(spec, seed, device)
            stem = "/".join([out, "runs", cell.problem, cell.loss, cell.optimizer, cell.variant,
                             f"seed{{seed}}"])
            runfiles.write_run(stem + ".tsv", result.losses, stem + ".json",
                               {{**spec, "seed": seed, "train_seconds": result.seconds}},
                               result.evaluations)
            runs.append(stem + ".tsv")
    pattern = out + "/runs/{{problem}}/{{loss}}/{{optimizer}}/{{variant}}/seed{{seed}}.tsv"
    steps = next(iter(experiment.problems.values())).steps
    # What the summary jobs, summarize.py and plot.py call (the same entry points).
    from optbench.reporting import analysis, analysis_context, cells
    pairs = list(dict.fromkeys((c.problem, c.loss) for c in experiment.cells()))
    texts = {{f"{{p}}/{{l}}": analysis_context.threshold_text(experiment.thresholds, p, l)
             for p, l in pairs}}
    levels = {{(p, l): cells.Threshold.parse(texts[f"{{p}}/{{l}}"]) for p, l in pairs}}
    cell_paths = summary.summarize_cells(runs, pattern, steps, out + "/summary", threshold=levels)
    context = analysis_context.context_for(experiment, texts).as_dict()
    tables = analysis.build_tables(cell_paths, (), context)
    analysis.write_tables(tables, out + "/summary")
    figures.draw_all(tables, out + "/figures", experiment.band)
    """
)


def in_process_seconds(config: Path, out: Path) -> float:
    code = IN_PROCESS.format(
        scripts=str(SCRIPTS),
        out=str(out),
        config=str(config),
        schema=str(REPO / "workflow/schemas/config.schema.yaml"),
    )
    return timed([sys.executable, "-c", code])


# One job per run through the per-run loop: the layout the default had before
# the packing and engine keys (2026-11-29), for the before/after row.
ONE_JOB_PER_RUN = ("--config", "job_scope=cell", "seeds_per_job=1", "engine=loop")


def readme_command(tmp: Path, name: str, *extra: str) -> float:
    """README's first command, `snakemake --cores 4`, in a fresh clone-like directory."""
    workdir = tmp / name
    workdir.mkdir()
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    return timed(snakemake(workdir, "--cores", "4", *extra))


def default_command(tmp: Path, quick: bool) -> None:
    print("a. README's first command on config.yaml against one in-process floor (same work)")
    floor = in_process_seconds(REPO / "config.yaml", tmp / "floor1")
    default = readme_command(tmp, "default")
    floor = min(floor, in_process_seconds(REPO / "config.yaml", tmp / "floor2"))
    report("in-process floor (80 runs + files + summaries + figures)", f"{floor:.1f} s", "-")
    report(
        "README's first command (default packing + engine) / floor",
        f"{default:.1f} s / {floor:.1f} s = {default / floor:.1f}x",
        "<= 3x",
    )
    if not quick:
        before = readme_command(tmp, "one-job-per-run", *ONE_JOB_PER_RUN)
        report(
            "same, one job per run with the loop (the old default) / floor",
            f"{before:.1f} s / {floor:.1f} s = {before / floor:.1f}x",
            "- (before)",
        )
    same = all(
        (tmp / "default/results/runs" / p.relative_to(tmp / "floor1/runs")).read_bytes()
        == p.read_bytes()
        for p in (tmp / "floor1/runs").rglob("*.tsv")
    )
    report("default command's 80 TSVs byte-identical to the per-run loop's", str(same), "True")


def _engines_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "benchmark_engines", REPO / "tools" / "benchmark_engines.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def engines(quick: bool) -> None:
    print("b. batched vs loop, training time per run-step inside one job (linear, Adam, CPU)")
    import torch

    torch.set_num_threads(1)
    module = _engines_module()
    module.timed_engines("linear", 4, 4, "cpu", 0)  # warm-up: imports, first kernels
    for runs in (10, 100, 1000):
        loop, batch, note = module.timed_engines("linear", runs, 40, "cpu", 100 if quick else 0)
        report(
            f"{runs:,} runs per job: loop / batched per run-step",
            f"{loop * 1e6:.1f} us / {batch * 1e6:.2f} us = {loop / batch:.1f}x ({note})",
            module.GOALS.get(("linear", runs), "-"),
        )


def _training_rules(workdir: Path, *args: str) -> list[str]:
    """The training rules a run of ``args`` would run (from its dry run's job table)."""
    dry = subprocess.run(
        snakemake(workdir, "-n", *args), check=True, capture_output=True, text=True
    ).stdout
    return sorted(set(re.findall(r"^(train\S*)\s+\d+$", dry, re.MULTILINE)))


def _training_seconds(workdir: Path, config: Path, *extra: str) -> float:
    """Wall time of the training jobs only (--until the training rules), 2 cores."""
    workdir.mkdir(parents=True)
    args = ("--configfile", str(config), *extra)
    until = _training_rules(workdir, *args)
    return timed(snakemake(workdir, "--cores", "2", *args, "--until", *until))


def study_folder(workdir: Path) -> Path:
    """Where the run in ``workdir`` wrote: results/ for config.yaml, else the one
    study folder results/<study>/ (docs/outputs.md, Studies)."""
    results = workdir / "results"
    if (results / "runs").is_dir():
        return results
    found = [path.parent for path in results.glob("*/runs")]
    return found[0] if len(found) == 1 else results


def _benchmark_rows(workdir: Path) -> list[dict]:
    rows = []
    for path in (study_folder(workdir) / "benchmarks/train").rglob("*.tsv"):
        lines = path.read_text().splitlines()
        header = lines[0].split("\t")
        rows.append(dict(zip(header, lines[1].split("\t"), strict=True)) | {"path": str(path)})
    return rows


TUNED_BATCHABLE = "only={optimizers: [sgd, momentum_sgd, adam, rmsprop, adamw]}"


def tuned(tmp: Path, quick: bool) -> None:
    """configs/tuned.yaml's training jobs on a subset of its seeds (every problem,
    loss, optimizer and variant), loop vs batched, each at job_scope loss (the
    fewest job start-ups that still spread over the cores; measured the best
    packing for both engines). Twice: the whole grid, and without L-BFGS, which
    runs in the per-run loop under either engine."""
    config = REPO / "configs" / "tuned.yaml"
    subsets = (
        ("whole grid", ("seeds=[0]", "tuning_seeds=[1000]"), 2),
        ("without L-BFGS", ("seeds=[0,1,2,3,4]", "tuning_seeds=[1000]", TUNED_BATCHABLE), 6),
    )
    if quick:
        subsets = subsets[1:]
    for name, subset, seeds in subsets:
        share = seeds / 25
        print(
            f"c. configs/tuned.yaml training jobs ({name}), {seeds} of its 25 seeds "
            f"({share:.0%} of the runs), job_scope loss, --cores 2"
        )
        seconds = {}
        for engine in ("loop", "auto"):
            workdir = tmp / f"tuned-{name.replace(' ', '-')}-{engine}"
            extra = ("--config", *subset, f"engine={engine}", "job_scope=loss")
            seconds[engine] = _training_seconds(workdir, config, *extra)
            rows = _benchmark_rows(workdir)
            report(
                f"tuned ({name}, {share:.0%} of the runs), engine {engine}",
                f"{seconds[engine]:.1f} s wall, {len(rows)} jobs, "
                f"{sum(float(r['s']) for r in rows):.1f} job-s",
                "-",
            )
        loop, batched = seconds["loop"], seconds["auto"]
        report(
            f"tuned ({name}) training wall time, loop / batched",
            f"{loop:.1f} s / {batched:.1f} s = {loop / batched:.1f}x",
            ">= 10x" if name == "whole grid" else "-",
        )


# The grid configs/tuned.yaml ran before it became a search (2026-12-03): six
# learning rates, one per decade, no schedule, no second hyper-parameter.
TUNED_GRID_RATES = [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0]


def tuned_as_grid(path: Path) -> Path:
    """configs/tuned.yaml with each search replaced by the old learning-rate grid."""
    config = yaml.safe_load((REPO / "configs" / "tuned.yaml").read_text())
    for entry in config["optimizers"].values():
        entry.pop("search", None)
        entry.pop("schedule", None)
        entry["sweep"] = {"lr": TUNED_GRID_RATES}
    path.write_text(yaml.safe_dump(config))
    return path


def searched(tmp: Path, quick: bool) -> None:
    """configs/tuned.yaml as a search against the grid it replaced, side by side:
    training jobs on 2 of its 25 seeds (every problem, loss, optimizer, variant)."""
    subset = ("seeds=[0]", "tuning_seeds=[1000]")
    if quick:
        subset += ("only={problems: [linear, quadratic, rosenbrock]}",)
    print(
        "j. configs/tuned.yaml: the quasi-random search (8 trials, 2 hyper-parameters, "
        "warm-up + cosine) against the grid it replaced (6 learning rates), 2 of 25 seeds, "
        "--cores 2"
    )
    configs = {
        "grid (before)": tuned_as_grid(tmp / "tuned-grid.yaml"),
        "search (now)": REPO / "configs" / "tuned.yaml",
    }
    seconds = {}
    for name, config in configs.items():
        workdir = tmp / f"searched-{name.split()[0]}"
        seconds[name] = _training_seconds(workdir, config, "--config", *subset)
        runs = len(list((study_folder(workdir) / "runs").rglob("*.tsv")))
        report(f"tuned.yaml training, {name}", f"{seconds[name]:.1f} s, {runs:,} runs", "-")
    before, now = seconds["grid (before)"], seconds["search (now)"]
    report(
        "tuned.yaml training, search / grid",
        f"{now:.1f} s / {before:.1f} s = {now / before:.2f}x",
        "<= 1.5x",
    )


def run_step_costs(quick: bool) -> None:
    """Each built-in problem's cost per run-step, as its file's RUN_STEP_US
    records it for the dry run's time estimate: Adam in the loop (20 runs),
    batched (100 runs, engine auto) and L-BFGS with the line search (5 runs)."""
    import torch

    from optbench import problems
    from optbench.engines import batched

    print("k. per-run-step cost of each built-in problem (us), against its file's RUN_STEP_US")
    torch.set_num_threads(1)
    criteria = {
        "regression": torch.nn.MSELoss(),
        "binary": torch.nn.BCEWithLogitsLoss(),
        "classification": torch.nn.CrossEntropyLoss(),
        "objective": None,
    }
    steps = 10 if quick else 40
    # Warm-up: the first loop of a process pays for torch's first kernels.
    warm = [problems.build("linear", 0, steps, {})]
    batched.train_loop(warm, criteria["regression"], "Adam", {"lr": 0.001}, steps)
    for name in ["linear", *sorted(set(problems.available()) - {"linear"})]:
        criterion = criteria[problems.declaration(name).kind]

        def built(runs, steps=steps, name=name):
            return [problems.build(name, seed, steps, {}) for seed in range(runs)]

        started = time.perf_counter()
        batched.train_loop(built(20), criterion, "Adam", {"lr": 0.001}, steps)
        loop = (time.perf_counter() - started) / (20 * steps) * 1e6
        result = batched.train_batched(
            built(100), criterion, "Adam", {"lr": 0.001}, steps, exact_only=True
        )
        together = result.seconds / (100 * steps) * 1e6 if result.engine == "batched" else None
        started = time.perf_counter()
        batched.train_loop(built(5), criterion, "LBFGS", {"line_search_fn": "strong_wolfe"}, steps)
        closure = (time.perf_counter() - started) / (5 * steps) * 1e6
        declared = problems.declaration(name).facts.run_step_us
        recorded = [declared.get(engine) for engine in ("loop", "batched", "lbfgs_loop")]
        measured = (loop, together, closure)
        report(
            f"{name}: loop / batched / L-BFGS us per run-step (recorded)",
            " / ".join("-" if m is None else f"{m:.1f}" for m in measured)
            + " ("
            + " / ".join("-" if r is None else f"{r}" for r in recorded)
            + ")",
            "-",
        )


def lbfgs_engines(quick: bool) -> None:
    """torch.optim.LBFGS (strong-Wolfe line search, history 100) per run-step: the
    batched L-BFGS at 10, 100 and 1,000 runs against the per-run loop (10 runs;
    the loop's cost per run does not depend on how many there are)."""
    import torch

    from optbench import problems
    from optbench.engines import batched

    print("l. batched L-BFGS vs the per-run loop, us per run-step (10 steps, one thread)")
    torch.set_num_threads(1)
    steps = 5 if quick else 10
    cases = {
        "quadratic": (torch.nn.MSELoss(), (10, 100, 1000)),
        "noisy_quadratic": (torch.nn.MSELoss(), (10, 100, 1000)),
        "linear": (torch.nn.MSELoss(), (10, 100, 1000)),
        "logistic": (torch.nn.BCEWithLogitsLoss(), (10, 100)),
        "rosenbrock": (None, (10, 100)),
        "breast_cancer_mlp": (torch.nn.BCEWithLogitsLoss(), (10, 100)),
        "digits_mlp": (torch.nn.CrossEntropyLoss(), (10, 100)),
    }
    if quick:
        cases = {name: (loss, sizes[:2]) for name, (loss, sizes) in cases.items()}
    limit = batched.LBFGS_BATCHED_HISTORY_MAX
    batched.LBFGS_BATCHED_HISTORY_MAX = float("inf")  # digits_mlp too, to show why
    try:
        for name, (criterion, sizes) in cases.items():
            kwargs = [
                {"line_search_fn": "strong_wolfe", "lr": 10 ** (-2 + 3 * k / 9)} for k in range(10)
            ]

            def built(runs, name=name):
                return [problems.build(name, seed, steps, {}) for seed in range(runs)]

            started = time.perf_counter()
            batched.train_loop(built(10), criterion, "LBFGS", kwargs, steps)
            loop = (time.perf_counter() - started) / (10 * steps) * 1e6
            for runs in sizes:
                result = batched.train_batched(
                    built(runs), criterion, "LBFGS", kwargs * (runs // 10), steps
                )
                together = result.seconds / (runs * steps) * 1e6
                report(
                    f"L-BFGS {name}, {runs} runs: loop / batched us per run-step",
                    f"{loop:.0f} / {together:.0f} = {loop / together:.1f}x",
                    "-",
                )
    finally:
        batched.LBFGS_BATCHED_HISTORY_MAX = limit


def _selections(workdir: Path) -> dict:
    """(problem, loss, optimizer) -> selected variant, from the summary's table."""
    chosen = {}
    for path in (workdir / "results").rglob("selection.tsv"):
        lines = path.read_text().splitlines()
        header = lines[0].split("\t")
        for line in lines[1:]:
            row = dict(zip(header, line.split("\t"), strict=True))
            chosen[(row.get("problem"), row.get("loss"), row.get("optimizer"))] = row.get("variant")
    return chosen


def tuned_lbfgs(tmp: Path, quick: bool) -> None:
    """configs/tuned.yaml end to end before and after the batched L-BFGS, side by
    side on 4 of its 25 seeds: engine auto and one job per pair (L-BFGS in the
    per-run loop, as before) against the shipped config (engine batched, two jobs
    per pair), --cores 2; and whether the selected variants agree."""
    config = REPO / "configs" / "tuned.yaml"
    # 4 of 25 seeds; "now" splits them over two jobs per pair as the shipped
    # config splits its 25 (13 + 12), "before" keeps one job per pair.
    subset = ("seeds=[0,1,2]", "tuning_seeds=[1000]")
    if quick:
        subset += ("only={problems: [quadratic, noisy_quadratic]}",)
    print("m. configs/tuned.yaml end to end: L-BFGS in the loop (before) / batched (now)")
    seconds, chosen = {}, {}
    for name, engine, packing in (("before", "auto", "all"), ("now", "batched", "2")):
        workdir = tmp / f"tuned-lbfgs-{name}"
        workdir.mkdir(parents=True)
        args = (
            "--configfile",
            str(config),
            "--config",
            *subset,
            f"engine={engine}",
            f"seeds_per_job={packing}",
        )
        seconds[name] = timed(snakemake(workdir, "--cores", "2", *args))
        chosen[name] = _selections(workdir)
        report(f"tuned.yaml end to end, {name} (engine {engine})", f"{seconds[name]:.1f} s", "-")
    same = sum(chosen["before"].get(key) == variant for key, variant in chosen["now"].items())
    report(
        "tuned.yaml end to end, before / now",
        f"{seconds['before']:.1f} s / {seconds['now']:.1f} s = "
        f"{seconds['before'] / seconds['now']:.2f}x; same selected variant in {same} of "
        f"{len(chosen['now'])} cells",
        ">= 5x",
    )


def sweep_config(path: Path) -> Path:
    lrs = [round(10 ** (-4 + 5 * i / 23), 6) for i in range(24)]
    optimizers = {
        name: {"class": cls, "kwargs": kwargs, "sweep": {"lr": lrs}}
        for name, cls, kwargs in (
            ("sgd", "SGD", {"lr": 0.1}),
            ("momentum_sgd", "SGD", {"lr": 0.1, "momentum": 0.9}),
            ("adam", "Adam", {"lr": 0.1}),
            ("rmsprop", "RMSprop", {}),
        )
    }
    config = {
        "seeds": list(range(40)),
        "tuning_seeds": list(range(1000, 1010)),
        "steps": 40,
        "device": "cpu",
        "optimizers": optimizers,
        "losses": {"mse": {"class": "MSELoss"}, "l1": {"class": "L1Loss"}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def sweep(tmp: Path) -> None:
    print(
        "d. a 10,000-run sweep end to end (linear; 4 optimizers x 25 lr variants x 2 losses "
        "x 50 seeds), default packing and engine, --cores 2"
    )
    config = sweep_config(tmp / "sweep.yaml")
    workdir = tmp / "sweep"
    workdir.mkdir()
    seconds = timed(snakemake(workdir, "--cores", "2", "--configfile", str(config)))
    runs = len(list((study_folder(workdir) / "runs").rglob("*.tsv")))
    rows = _benchmark_rows(workdir)
    largest = max(rows, key=lambda r: float(r["max_rss"]))
    report(
        f"{runs:,}-run sweep, README command end to end",
        f"{seconds:.1f} s = {runs / seconds:,.0f} runs/s ({len(rows)} training jobs)",
        "-",
    )
    report(
        "its training jobs (the rest is the analysis jobs)",
        ", ".join(f"{float(r['s']):.1f} s" for r in rows),
        "-",
    )
    report(
        "peak memory (max_rss) of its largest training job",
        f"{float(largest['max_rss']):.0f} MB",
        "-",
    )


BARE_LOOP = textwrap.dedent(
    """
    import sys, time, json
    sys.path.insert(0, {scripts!r})
    import torch
    from optbench.engines import training
    torch.set_num_threads(1)
    dim, steps, reps, device = {dim}, {steps}, {reps}, torch.device({device!r})
    spec = {{"optimizer": {{"name": "adam", "class": "Adam",
                            "kwargs": {{"lr": 0.1, "betas": [0.9, 0.99], "eps": 1e-9}}}},
             "loss": {{"name": "mse", "class": "MSELoss", "kwargs": {{}}}},
             "problem": {{"name": "linear", "problem": "linear", "kind": "regression",
                         "kwargs": {{"dim": dim}}}},
             "variant": "base", "steps": steps, "device": str(device), "problems_dir": ""}}

    def bare(seed):
        torch.manual_seed(seed)
        net = torch.nn.Linear(dim, dim, bias=False).to(device)
        x = torch.randn(1, dim, device=device)
        y = torch.randn(1, 1, device=device) * x + 2
        opt = torch.optim.Adam(net.parameters(), lr=0.1, betas=(0.9, 0.99), eps=1e-9)
        crit = torch.nn.MSELoss()
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad()
            loss = crit(net(x), y)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    def ours(seed):
        return training.train_one(spec, seed, device).seconds

    bare(0); ours(0)  # warm-up
    b, o = [], []
    for seed in range(reps):  # interleaved, so drift hits both alike
        b.append(bare(seed)); o.append(ours(seed))
    b.sort(); o.sort()
    print(json.dumps({{"bare": b[len(b) // 2] / steps, "ours": o[len(o) // 2] / steps}}))
    """
)


def loop_overhead(reps: int, dim=20, steps=40, device="cpu") -> dict:
    code = BARE_LOOP.format(scripts=str(SCRIPTS), dim=dim, steps=steps, reps=reps, device=device)
    process = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    return json.loads(process.stdout.strip().splitlines()[-1])


def training_loop(reps: int) -> None:
    print("f. the per-run loop against a bare PyTorch loop (same run, CPU)")
    result = loop_overhead(reps)
    ratio = result["ours"] / result["bare"]
    report(
        "training loop time per step / bare loop",
        f"{result['ours'] * 1e6:.1f} us / {result['bare'] * 1e6:.1f} us = {ratio:.2f}x",
        "<= 1.1x",
    )


TRIVIAL_SNAKEFILE = textwrap.dedent(
    """
    rule all:
        input: expand("out/{i}.txt", i=range(10000))
    rule make:
        output: "out/{i}.txt"
        shell: "touch {output}"
    """
)


def big_grid_config(path: Path) -> Path:
    optimizers = {
        f"sgd_lr{i}": {"class": "SGD", "kwargs": {"lr": 0.001 * (i + 1)}} for i in range(50)
    }
    config = {
        "seeds": list(range(100)),
        "steps": 40,
        "device": "cpu",
        "optimizers": optimizers,
        "losses": {"mse": {"class": "MSELoss"}, "l1": {"class": "L1Loss"}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def dry_run_scale(tmp: Path, reps: int) -> None:
    print("g. dry run of a 10,000-run grid against a trivial 10,000-job Snakefile")
    trivial = tmp / "trivial"
    trivial.mkdir()
    (trivial / "Snakefile").write_text(TRIVIAL_SNAKEFILE)
    config = big_grid_config(tmp / "big.yaml")
    (tmp / "big").mkdir()
    ours, base, packed = [], [], []
    for _ in range(reps):
        base.append(timed([sys.executable, "-m", "snakemake", "-n", "-q"], cwd=trivial))
        ours.append(
            timed(snakemake(tmp / "big", "-n", "-q", "--configfile", str(config), *ONE_JOB_PER_RUN))
        )
        packed.append(
            timed(
                snakemake(
                    tmp / "big",
                    "-n",
                    "-q",
                    "--configfile",
                    str(config),
                )
            )
        )
    b, o, p = min(base), min(ours), min(packed)
    report(
        "10,000-run grid dry run (one job per run) / trivial",
        f"{o:.1f} s / {b:.1f} s = {o / b:.2f}x",
        "<= 1.5x",
    )
    report(
        "10,000-run grid dry run (default packing: 2 jobs of 5,000 runs) / trivial",
        f"{p:.1f} s / {b:.1f} s = {p / b:.2f}x",
        "-",
    )


def planning_grid_config(path: Path, runs: int) -> Path:
    """The issue's grid (issue 33): linear, 4 optimizers x 25 learning rates x 2
    losses x ``runs`` / 200 seeds, default job_scope (loss), seeds in 4 ranges:
    8 training jobs whatever the number of runs."""
    seeds = runs // 200
    classes = {"sgd": "SGD", "adam": "Adam", "rmsprop": "RMSprop", "adagrad": "Adagrad"}
    optimizers = {
        f"{name}_{i}": {"class": cls, "kwargs": {"lr": round(0.001 * (i + 1), 3)}}
        for name, cls in classes.items()
        for i in range(25)
    }
    config = {
        "seeds": list(range(seeds)),
        "seeds_per_job": seeds // 4,
        "steps": 40,
        "device": "cpu",
        "optimizers": optimizers,
        "losses": {"mse": {"class": "MSELoss"}, "l1": {"class": "L1Loss"}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def trivial_snakefile(jobs: int) -> str:
    """A Snakefile of ``jobs`` jobs doing nothing: Snakemake's own floor."""
    return TRIVIAL_SNAKEFILE.replace("range(10000)", f"range({jobs})")


def measured(command, cwd=None) -> tuple[float, float, float, int]:
    """Wall seconds, CPU seconds (user + system: what a busy machine does not
    inflate), peak memory (MB, GNU time's maximum resident set) and the bytes
    the command printed."""
    process = subprocess.run(
        ["/usr/bin/time", "-f", "%e %U %S %M", *command],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    *printed, last = process.stderr.rstrip("\n").split("\n")
    seconds, user, system, kilobytes = last.split()
    size = len(process.stdout.encode()) + len("\n".join(printed).encode())
    return float(seconds), float(user) + float(system), int(kilobytes) / 1024, size


# Goals of issue 33 per grid size: seconds and MB of a dry run.
PLANNING_GOALS = {10_000: None, 100_000: (10, 300), 1_000_000: (60, 1000)}


def planning_scale(tmp: Path, sizes) -> None:
    print("n. planning (dry run) of 10^4-10^6-run grids (8 jobs) beside a trivial 8-job Snakefile")
    trivial = tmp / "trivial8"
    trivial.mkdir(exist_ok=True)
    (trivial / "Snakefile").write_text(trivial_snakefile(8))
    floor, floor_cpu, floor_mb, _ = measured(
        [sys.executable, "-m", "snakemake", "-n", "-q"], cwd=trivial
    )
    report(
        "trivial 8-job Snakefile dry run",
        f"{floor:.1f} s ({floor_cpu:.1f} s CPU), {floor_mb:.0f} MB",
        "-",
    )
    found = []
    for runs in sizes:
        config = planning_grid_config(tmp / f"plan{runs}.yaml", runs)
        workdir = tmp / f"plan{runs}"
        workdir.mkdir(exist_ok=True)
        command = snakemake(workdir, "-n", "--quiet", "rules", "--configfile", str(config))
        seconds, cpu, mb, size = measured(command)
        found.append((runs, cpu, mb))
        goal = PLANNING_GOALS.get(runs)
        report(
            f"{runs:,}-run grid dry run (8 jobs) / trivial",
            f"{seconds:.1f} s ({cpu:.1f} s CPU, {cpu / floor_cpu:.1f}x), {mb:.0f} MB, "
            f"printed {size / 1e3:.0f} kB",
            "-" if goal is None else f"< {goal[0]} s, < {goal[1]} MB, printed < 100 kB",
        )
    if len(found) > 1:
        (small, s_cpu, s_mb), (large, l_cpu, l_mb) = found[0], found[-1]
        per_run_us = (l_cpu - s_cpu) / (large - small) * 1e6
        per_run_bytes = (l_mb - s_mb) * 2**20 / (large - small)
        report(
            "planning slope (largest vs smallest grid, CPU)",
            f"{per_run_us:.2f} us and {per_run_bytes:.0f} bytes per run",
            "at most linear",
        )


SUMMARIZE = textwrap.dedent(
    """
    import json, resource, sys, time
    sys.path.insert(0, {scripts!r})
    from optbench.reporting import analysis
    runs = json.load(open({runs!r}))
    started = time.perf_counter()
    analysis.summarize_runs(runs, {pattern!r}, 40, {out!r})
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({{"seconds": seconds, "peak_mb": peak}}))
    """
)


def aggregation_scale(tmp: Path) -> None:
    print("h. summarising 10,000 run TSVs (100 cells of 100 runs)")
    import numpy as np

    from optbench import runfiles

    rng = np.random.default_rng(0)
    pattern = str(tmp / "agg" / "{loss}" / "{optimizer}" / "seed{seed}.tsv")
    runs = []
    for optimizer in range(50):
        for loss in ("mse", "l1"):
            for seed in range(100):
                path = pattern.format(loss=loss, optimizer=f"opt{optimizer}", seed=seed)
                runfiles.write_text_atomic(path, runfiles.format_losses(rng.lognormal(size=40)))
                runs.append(path)
    (tmp / "runs.json").write_text(json.dumps(runs))
    code = SUMMARIZE.format(
        scripts=str(SCRIPTS), runs=str(tmp / "runs.json"), pattern=pattern, out=str(tmp / "summary")
    )
    process = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    result = json.loads(process.stdout.strip().splitlines()[-1])
    report(
        "summary of 10,000 runs x 40 steps (all cells and the combine step, one process)",
        f"{len(runs) / result['seconds']:,.0f} runs/s ({result['seconds']:.2f} s)",
        ">= 2,000 runs/s",
    )
    report("peak memory of that summary process", f"{result['peak_mb']:.0f} MB", "< 1,000 MB")
    # What the pipeline runs per cell on the submitting host: a process of its own.
    cell = [path for path in runs if "/mse/opt0/" in path]
    command = [sys.executable, str(SCRIPTS / "summarize_cell.py"), "--pattern", pattern]
    command += ["--steps", "40", "--cell", "loss=mse", "--cell", "optimizer=opt0"]
    command += ["--out", str(tmp / "cell.json"), *cell]
    seconds = min(timed(command) for _ in range(3))
    report("one summarize_cell job (100 runs, own process)", f"{seconds:.2f} s", "-")


# Four more element-wise torch optimizers beside config.yaml's four: 16 cells, so
# that 10^6 runs take 62,500 seeds (a config holds at most 100,000 values).
MILLION_OPTIMIZERS = {
    "adamw": {"class": "AdamW", "kwargs": {"lr": 0.1}},
    "nadam": {"class": "NAdam", "kwargs": {"lr": 0.1}},
    "adamax": {"class": "Adamax", "kwargs": {"lr": 0.1}},
    "adagrad": {"class": "Adagrad", "kwargs": {"lr": 0.1}},
}


def million_config(path: Path, runs: int, run_files: str) -> Path:
    """Issue 33's end-to-end grid: the reference problem (linear, 40 steps), 8
    optimizers (config.yaml's 4 and MILLION_OPTIMIZERS) x config.yaml's 2 losses,
    ``runs`` / 16 seeds in four ranges (8 training jobs of runs / 8 each: the
    default job_scope loss; a per-job training job holds its runs in memory
    until it writes them, about 8 KB a run, so 125,000 a job at 10^6)."""
    seeds = runs // 16
    default = yaml.safe_load((REPO / "config.yaml").read_text())
    config = {
        "study": "million",
        "seeds": list(range(seeds)),
        "seeds_per_job": max(1, seeds // 4),
        "steps": 40,
        "device": "cpu",
        "optimizers": default["optimizers"] | MILLION_OPTIMIZERS,
        "losses": default["losses"],
        "run_files": run_files,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and every process under it, summed (/proc)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(name))
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        pending += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    return total


def with_peak_memory(command, log: Path) -> tuple[float, float]:
    """Wall seconds and peak memory (MB: the summed resident memory of the command's
    whole process tree, sampled every 0.5 s: Snakemake and the jobs it runs at once)."""
    started = time.perf_counter()
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
        peak = 0
        while process.poll() is None:
            peak = max(peak, _tree_rss(process.pid))
            time.sleep(0.5)
    if process.returncode:
        tail = log.read_text()[-3000:]
        raise subprocess.CalledProcessError(process.returncode, command[:4], tail)
    return time.perf_counter() - started, peak / 2**20


STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
JOB_START = re.compile(r"^(?:local)?rule (\S+):$")
JOB_ID = re.compile(r"^\s+jobid: (\d+)$")
JOB_END = re.compile(r"^Finished jobid: (\d+) \(Rule: (\S+)\)$")


def stage_seconds(log_text: str) -> dict[str, tuple[float, int]]:
    """Per stage (training, cell summaries, then each analysis rule): the seconds its
    jobs ran, summed, and how many, from the time stamps of Snakemake's log."""
    from datetime import datetime

    stamp, started, pending, stages = None, {}, None, {}
    for line in log_text.splitlines():
        if match := STAMP.match(line):
            stamp = datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y")
        elif match := JOB_START.match(line):
            pending = stamp
        elif (match := JOB_ID.match(line)) and pending is not None:
            started[match.group(1)], pending = pending, None
        elif match := JOB_END.match(line):
            rule = match.group(2)
            stage = (
                "training"
                if rule.startswith("train")
                else "cell summaries"
                if rule.startswith("summarize_")
                else rule
            )
            seconds, jobs = stages.get(stage, (0.0, 0))
            took = (stamp - started[match.group(1)]).total_seconds()
            stages[stage] = (seconds + took, jobs + 1)
    return stages


def million_runs(tmp: Path, sizes, run_files=("per_job",)) -> None:
    """Issue 33: reference runs end to end from a fresh folder to the report."""
    print(
        "p. reference runs end to end, fresh folder to the report (linear, 40 steps, "
        "8 optimizers x 2 losses, --cores 2, default engine)"
    )
    for layout in run_files:
        for runs in sizes:
            config = million_config(tmp / f"million{runs}{layout}.yaml", runs, layout)
            workdir = tmp / f"million{runs}{layout}"
            workdir.mkdir()
            log = tmp / f"million{runs}{layout}.log"
            seconds, peak = with_peak_memory(
                snakemake(workdir, "--cores", "2", "--configfile", str(config)), log
            )
            page = f"{workdir}/report.html"
            report_seconds, report_peak = with_peak_memory(
                snakemake(workdir, "--configfile", str(config), "--report", page),
                tmp / f"million{runs}{layout}.report.log",
            )
            stages = stage_seconds(log.read_text())
            total = seconds + report_seconds
            goal = "< 1,200 s, < 4,096 MB" if runs == 1_000_000 else "-"
            report(
                f"{runs:,} runs end to end, run_files {layout}",
                f"{total:.0f} s ({seconds:.0f} s workflow + {report_seconds:.0f} s report), "
                f"peak {max(peak, report_peak):,.0f} MB",
                goal,
            )
            report(
                f"  its stages (job seconds, summed over jobs; 2 run at once), {layout}",
                "; ".join(f"{name} {s:.0f} s ({n})" for name, (s, n) in stages.items()),
                "-",
            )
            shutil.rmtree(workdir, ignore_errors=True)


def gpu(reps: int) -> None:
    print("e. GPU: the same figures with device cuda")
    import torch

    if not torch.cuda.is_available():
        report("GPU rows", "no GPU", "measured where a GPU is lent")
        return
    module = _engines_module()
    module.timed_engines("linear", 4, 4, "cuda", 0)
    for runs in (100, 1000):
        loop, batch, note = module.timed_engines("linear", runs, 40, "cuda", 100)
        report(
            f"GPU {runs:,} runs per job: loop / batched per run-step",
            f"{loop * 1e6:.1f} us / {batch * 1e6:.2f} us = {loop / batch:.1f}x ({note})",
            "-",
        )
    for dim, steps in ((20, 40), (4096, 1000)):
        result = loop_overhead(max(3, reps // 10) if dim > 20 else reps, dim, steps, "cuda")
        report(
            f"GPU {dim}x{dim}, {steps} steps: pipeline loop / bare loop",
            f"{1 / result['ours']:,.0f} / {1 / result['bare']:,.0f} steps/s "
            f"= {result['ours'] / result['bare']:.2f}x time",
            "<= 1.1x",
        )


def quiet_slurm_probe() -> None:
    """Snakemake imports every installed executor plugin at start, and the Slurm
    plugin then runs `scontrol show config`, which waits 10 s when a Slurm client
    is installed but no controller answers. That wait is not the pipeline's."""
    if os.environ.get("SLURM_CONF") or not shutil.which("scontrol"):
        return
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, timeout=30, check=False)
    if ping.returncode != 0:
        os.environ["SLURM_CONF"] = os.devnull
        print("note: Slurm client without a controller here; SLURM_CONF=/dev/null for all runs")


def numerics_cost(quick: bool) -> None:
    """Each mode in its own processes (the pins act at torch's import), alternating."""
    print("i. numerics portable vs native, per run-step (Adam, CPU, one thread)")
    command = [sys.executable, str(REPO / "tools" / "benchmark_engines.py"), "--no-memory"]
    command += ["--json", "--problems", "linear", "digits_mlp", "--runs", "100"]
    env = {k: v for k, v in os.environ.items() if k not in _pins()}
    best: dict[tuple, float] = {}
    for _ in range(1 if quick else 2):
        for mode in ("portable", "native"):
            out = subprocess.run(
                [*command, "--numerics", mode], capture_output=True, text=True, env=env, check=True
            ).stdout
            for row in json.loads(out.strip().splitlines()[-1]):
                for engine in ("loop", "batched"):
                    key = (mode, row["problem"], engine)
                    best[key] = min(best.get(key, float("inf")), row[f"{engine}_s"])
    for problem in ("linear", "digits_mlp"):
        for engine in ("loop", "batched"):
            portable = best[("portable", problem, engine)]
            native = best[("native", problem, engine)]
            report(
                f"numerics portable / native, {problem}, {engine} (100 runs)",
                f"{portable * 1e6:.2f} us / {native * 1e6:.2f} us = {portable / native:.2f}x",
                "-",
            )


def checkpoint_cost(tmp: Path, quick: bool) -> None:
    """What checkpoints cost (engines/checkpoints.py), per run of text_transformer and
    digits_cnn (defaults, AdamW, the loop): training time with no checkpoint, at the
    default interval and every 10 % of the steps; the checkpoint's size; and the
    steps a resume trains again after a kill at a random step."""
    import random

    import torch

    from optbench import problems
    from optbench.engines import checkpoints, training

    print("o. checkpoints: overhead, size per run, steps redone after a kill (loop, AdamW)")
    torch.set_num_threads(1)
    steps = 100 if quick else 400
    criterion = torch.nn.CrossEntropyLoss()
    chooser = random.Random(0)

    class Killed(Exception):
        pass

    for name in ("text_transformer", "digits_cnn"):
        path = tmp / f"{name}.checkpoint"

        def once(interval, kill_at=None, path=path, name=name):
            instance = problems.build(name, 0, steps, {})
            optimizer = torch.optim.AdamW(instance.model.parameters(), lr=1e-3)
            job = None
            if interval is not None:
                job = checkpoints.JobCheckpoint(path, "benchmark", interval)
                job.load()
            done = [0]

            def on_step(count):
                done[0] += count
                if done[0] == kill_at:
                    raise Killed  # after the step, before its boundary: as a SIGKILL there

            started = time.perf_counter()
            looped = training.train_instance(
                instance,
                criterion,
                optimizer,
                steps,
                None,
                None,
                0,
                on_step,
                None if job is None else job.unit(name),
            )
            return time.perf_counter() - started, job, looped

        once(None)  # warm-up: the first loop of a process pays for torch's first kernels
        default = checkpoints.Interval(seconds=checkpoints.DEFAULT_SECONDS)
        plain, at_default, saves = [], [], 0
        for _ in range(3):  # taking turns, so that a busy machine slows both alike
            plain.append(once(None)[0])
            path.unlink(missing_ok=True)
            seconds, job, _ = once(default)
            at_default.append(seconds)
            saves = max(saves, job.saves)
        plain, at_default = min(plain), min(at_default)
        dense = checkpoints.Interval(steps=steps // 10)
        path.unlink(missing_ok=True)
        seconds, dense_job, reference = once(dense)
        path.unlink(missing_ok=True)
        per_save = dense_job.seconds_saving / dense_job.saves
        report(
            f"{name}: training with checkpoints at the default interval ({default.describe()}) "
            "/ without",
            f"{at_default:.2f} s / {plain:.2f} s = {at_default / plain:.3f}x ({saves} saves; "
            f"one save {per_save * 1e3:.1f} ms = {per_save / checkpoints.DEFAULT_SECONDS:.3%} "
            "of the default interval)",
            "<= 1.05x",
        )
        report(
            f"{name}: every {dense.steps} steps ({dense_job.saves} saves) / without",
            f"{seconds:.2f} s / {plain:.2f} s = {seconds / plain:.3f}x",
            "-",
        )
        report(f"{name}: checkpoint size of one run", f"{dense_job.last_bytes:,} bytes", "-")
        kill_at = chooser.randint(1, steps - 1)
        with contextlib.suppress(Killed):
            once(dense, kill_at)
        _, resumed, looped = once(dense)
        redone = kill_at - resumed.resumed_from.get(name, 0)
        same = looped.losses == reference.losses
        report(
            f"{name}: steps redone after a kill at step {kill_at} (every {dense.steps})",
            f"{redone} (losses identical to an uninterrupted run: {same})",
            f"<= {dense.steps}",
        )
        path.unlink(missing_ok=True)


def _pins() -> tuple[str, ...]:
    from optbench.engines import numerics

    return numerics.STEERING_VARIABLES


SECTIONS = {
    "default": "a. README's first command / in-process floor",
    "engines": "b. batched vs loop per run-step at 10/100/1,000 runs",
    "tuned": "c. configs/tuned.yaml training, loop vs batched (a subset, scaled)",
    "sweep": "d. a 10,000-run sweep end to end: runs/s, peak memory",
    "gpu": "e. GPU rows (no GPU: says so)",
    "loop": "f. per-run loop / bare PyTorch loop",
    "dryrun": "g. 10,000-run dry run / trivial Snakefile",
    "summary": "h. summarising 10,000 runs",
    "numerics": "i. numerics portable / native per run-step (linear, digits_mlp; loop, batched)",
    "searched": "j. configs/tuned.yaml as a search / the grid it replaced (a subset)",
    "runstep": "k. per-run-step cost of each built-in problem (the dry run's time estimate)",
    "lbfgs": "l. batched L-BFGS vs the loop per run-step at 10/100/1,000 runs",
    "tunedlbfgs": "m. configs/tuned.yaml end to end, L-BFGS in the loop / batched (a subset)",
    "planning": "n. dry runs of 10^4, 10^5, 10^6-run grids / a trivial Snakefile, their slope",
    "checkpoints": "o. checkpoint overhead, size per run, steps redone after a kill",
    "million": "p. 10^6 reference runs end to end to the report, run_files per_job (~20 min)",
}
# Sections run only when named (--only): too long for "everything".
OPT_IN = {"million"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller subsets")
    parser.add_argument(
        "--only", nargs="*", choices=list(SECTIONS), help="sections to run (default: all)"
    )
    parser.add_argument(
        "--million-runs",
        nargs="*",
        type=int,
        help="section million: these grid sizes (default 1,000,000; --quick 10^4 and 10^5)",
    )
    args = parser.parse_args()
    # In-process training (sections a, b, f) in the pipeline's default mode,
    # pinned before anything imports torch; section i compares the two modes.
    from optbench.engines import numerics

    numerics.pin("portable")
    sections = args.only or [name for name in SECTIONS if name not in OPT_IN]
    reps = 50 if args.quick else 300
    quiet_slurm_probe()
    tmp = Path(tempfile.mkdtemp(prefix="optbench-bench-"))
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}; scratch {tmp}")
    run = {
        "default": lambda: default_command(tmp, args.quick),
        "engines": lambda: engines(args.quick),
        "tuned": lambda: tuned(tmp, args.quick),
        "sweep": lambda: sweep(tmp),
        "gpu": lambda: gpu(reps),
        "loop": lambda: training_loop(reps),
        "dryrun": lambda: dry_run_scale(tmp, 1 if args.quick else 2),
        "planning": lambda: planning_scale(
            tmp, (10_000, 100_000) if args.quick else (10_000, 100_000, 1_000_000)
        ),
        "summary": lambda: aggregation_scale(tmp),
        "numerics": lambda: numerics_cost(args.quick),
        "searched": lambda: searched(tmp, args.quick),
        "runstep": lambda: run_step_costs(args.quick),
        "lbfgs": lambda: lbfgs_engines(args.quick),
        "tunedlbfgs": lambda: tuned_lbfgs(tmp, args.quick),
        "checkpoints": lambda: checkpoint_cost(tmp, args.quick),
        "million": lambda: million_runs(
            tmp, args.million_runs or ((10_000, 100_000) if args.quick else (1_000_000,))
        ),
    }
    try:
        for name in sections:
            run[name]()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| measure | value | goal |\n| --- | --- | --- |")
    for name, value, goal in ROWS:
        print(f"| {name} | {value} | {goal} |")


if __name__ == "__main__":
    main()
