"""Benchmark: prints each measured ratio beside its goal, all measured in one run.

Run by hand from the repository root (not by CI; takes a few minutes):

    python3 tools/benchmark.py            # everything
    python3 tools/benchmark.py --quick    # fewer repetitions

Every figure compares two things measured here, side by side, on this machine,
so the ratios hold even where absolute times are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
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
    # The lower bound: one Python process doing what the pipeline does.
    import json, sys, time
    sys.path.insert(0, {scripts!r})
    import torch
    from optbench import figures, runfiles, settings, summary, training
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
    summary.summarize_runs(runs, pattern, steps, out + "/summary")
    table = summary.selected_rows(figures.read_table(out + "/summary/steps.tsv"),
                                  figures.read_table(out + "/summary/selection.tsv"))
    panels = list(dict.fromkeys((c.problem, c.loss) for c in experiment.cells()))
    for problem, loss in panels:
        paths = [f"{{out}}/{{problem}}-{{loss}}.png", f"{{out}}/{{problem}}-{{loss}}.svg"]
        figures.plot_loss(table, loss, experiment.band, paths, problem)
    figures.plot_overview(table, panels, experiment.band,
                          [out + "/overview.png", out + "/overview.svg"])
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


def pipeline_vs_lower_bound(tmp: Path, config: Path) -> None:
    print("1-2. default pipeline (--cores 2) against one in-process loop of the same 80 runs")
    lower = in_process_seconds(config, tmp / "inprocess")
    unpacked = timed(snakemake(tmp / "unpacked", "--cores", "2", "--configfile", str(config)))
    packed = timed(
        snakemake(
            tmp / "packed",
            "--cores",
            "2",
            "--configfile",
            str(config),
            "--config",
            "seeds_per_job=all",
        )
    )
    lower_again = in_process_seconds(config, tmp / "inprocess2")
    lower = min(lower, lower_again)
    report("in-process lower bound (80 runs + summaries + figures)", f"{lower:.1f} s", "-")
    report(
        "pipeline, one job per seed / lower bound",
        f"{unpacked:.1f} s / {lower:.1f} s = {unpacked / lower:.1f}x",
        "none set (start-up bound)",
    )
    report(
        "pipeline, seeds_per_job=all / lower bound",
        f"{packed:.1f} s / {lower:.1f} s = {packed / lower:.1f}x",
        "<= 3x",
    )
    same = all(
        (tmp / "unpacked" / p.relative_to(tmp / "packed")).read_bytes() == p.read_bytes()
        for p in (tmp / "packed" / "results" / "runs").rglob("*.tsv")
    )
    report("packed run TSVs byte-identical to unpacked", str(same), "True")
    sidecars = sorted((tmp / "unpacked" / "results" / "runs").rglob("*.json"))
    before_first_step = [json.loads(p.read_text())["job_seconds_before_this_run"] for p in sidecars]
    import_torch = min(timed([sys.executable, "-c", "import torch"]) for _ in range(3))
    bare_python = min(timed([sys.executable, "-c", "pass"]) for _ in range(3))
    median = sorted(before_first_step)[len(before_first_step) // 2]
    report(
        "job start-up before its first run (median, inside the process)",
        f"{median:.2f} s; a bare `python -c 'import torch'` process takes "
        f"{import_torch:.2f} s (python alone {bare_python:.2f} s)",
        "torch import only",
    )


BARE_LOOP = textwrap.dedent(
    """
    import sys, time, json
    sys.path.insert(0, {scripts!r})
    import torch
    from optbench import training
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
    print("3. in-job training loop against a bare PyTorch loop (same run, CPU)")
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
    print("4. dry run of a 10,000-run grid against a trivial 10,000-job Snakefile")
    trivial = tmp / "trivial"
    trivial.mkdir()
    (trivial / "Snakefile").write_text(TRIVIAL_SNAKEFILE)
    config = big_grid_config(tmp / "big.yaml")
    (tmp / "big").mkdir()
    ours, base, packed = [], [], []
    for _ in range(reps):
        base.append(timed([sys.executable, "-m", "snakemake", "-n", "-q"], cwd=trivial))
        ours.append(timed(snakemake(tmp / "big", "-n", "-q", "--configfile", str(config))))
        packed.append(
            timed(
                snakemake(
                    tmp / "big",
                    "-n",
                    "-q",
                    "--configfile",
                    str(config),
                    "--config",
                    "seeds_per_job=all",
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
        "10,000-run grid dry run (seeds_per_job=all, 100 jobs) / trivial",
        f"{p:.1f} s / {b:.1f} s = {p / b:.2f}x",
        "-",
    )


SUMMARIZE = textwrap.dedent(
    """
    import json, resource, sys, time
    sys.path.insert(0, {scripts!r})
    from optbench import summary
    runs = json.load(open({runs!r}))
    started = time.perf_counter()
    summary.summarize_runs(runs, {pattern!r}, 40, {out!r})
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({{"seconds": seconds, "peak_mb": peak}}))
    """
)


def aggregation_scale(tmp: Path) -> None:
    print("5. summarising 10,000 run TSVs (100 cells of 100 runs)")
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


def gpu(reps: int) -> None:
    print("6. GPU: steps per second against a bare loop")
    import torch

    if not torch.cuda.is_available():
        report(
            "GPU figures", "skipped: no CUDA device visible here", "measured where a GPU is lent"
        )
        return
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--only", nargs="*", type=int, help="section numbers to run (1..6)")
    args = parser.parse_args()
    sections = set(args.only or range(1, 7))
    reps = 50 if args.quick else 300
    quiet_slurm_probe()
    tmp = Path(tempfile.mkdtemp(prefix="optbench-bench-"))
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}; scratch {tmp}")
    try:
        if sections & {1, 2}:
            pipeline_vs_lower_bound(tmp, REPO / "config.yaml")
        if 3 in sections:
            training_loop(reps)
        if 4 in sections:
            dry_run_scale(tmp, 1 if args.quick else 2)
        if 5 in sections:
            aggregation_scale(tmp)
        if 6 in sections:
            gpu(reps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n| measure | value | goal |\n| --- | --- | --- |")
    for name, value, goal in ROWS:
        print(f"| {name} | {value} | {goal} |")


if __name__ == "__main__":
    main()
