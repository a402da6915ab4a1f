"""Accepts training jobs that finished after Snakemake itself was interrupted.

Usage (from the directory Snakemake runs in, with the interrupted run's options):

    python3 workflow/scripts/accept_finished.py [SNAKEMAKE OPTIONS ...]

When only the Snakemake process is stopped (a SIGINT or SIGTERM from a
terminal multiplexer or a login node), the training jobs it started may run
on to their end, but Snakemake has marked their files incomplete and the next
run stops with IncompleteFilesException. This asks Snakemake (a dry run) which
files it holds incomplete, keeps those that the manifests of packed training
jobs prove complete (runs.proven_by_manifests: a manifest exists only when
its job's latest start ran to the end, and every run still has the SHA-256
it records), and clears Snakemake's marks on exactly those with
``snakemake --cleanup-metadata``. Anything not proven is left marked and
listed, with the command that re-trains it (``--rerun-incomplete``).

Exits 0 when nothing is left incomplete, 1 when some files still are, and
with the dry run's status when it fails for another reason.
"""

import subprocess
import sys
from pathlib import Path

from optbench import runfiles

SNAKEFILE = Path(__file__).resolve().parents[2] / "Snakefile"
# Every study's: results/manifests/train (config.yaml), results/<study>/manifests/train.
MANIFESTS = ("results/manifests/train/**/*.tsv", "results/*/manifests/train/**/*.tsv")
# Snakemake's IncompleteFilesException ends with this line, then one file per line.
LIST_HEADING = "Incomplete files:"


def incomplete_files(output: str) -> list[str] | None:
    """The files listed by Snakemake's IncompleteFilesException, or None without one."""
    if "IncompleteFilesException" not in output or LIST_HEADING not in output:
        return None
    listed = []
    for line in output.split(LIST_HEADING, 1)[1].splitlines():
        name = line.strip()
        if not name:
            if listed:
                break
            continue
        if " " in name or ":" in name:  # the next message begins
            break
        listed.append(name)
    return listed


def snakemake(options, *extra) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), *extra, *options]
    return subprocess.run(command, capture_output=True, text=True)


def main(argv=None) -> int:
    options = list(sys.argv[1:] if argv is None else argv)
    dry_run = snakemake(options, "--dry-run")
    output = dry_run.stdout + dry_run.stderr
    listed = incomplete_files(output)
    if listed is None:
        if dry_run.returncode != 0:
            print(output[-3000:], file=sys.stderr)
            return dry_run.returncode
        print("nothing to accept: Snakemake holds no file incomplete")
        return 0
    workdir = _workdir(options)
    manifests = sorted(
        {path.relative_to(workdir) for pattern in MANIFESTS for path in workdir.glob(pattern)}
    )
    proven, unproven = runfiles.proven_by_manifests(listed, manifests, root=workdir)
    if proven:
        # It exits 1 when a file has no other metadata (Snakemake never recorded
        # the job as finished) after clearing the mark all the same; the next
        # dry run says whether the marks are gone.
        cleared = snakemake(options, "--cleanup-metadata", *proven)
        again = snakemake(options, "--dry-run")
        still = set(incomplete_files(again.stdout + again.stderr) or ())
        if still & set(proven):
            print(cleared.stdout + cleared.stderr, file=sys.stderr)
            return cleared.returncode or 1
    print(
        f"accepted {len(proven)} of {len(listed)} incomplete file(s): their training jobs "
        "finished, as their manifests prove"
    )
    if unproven:
        print(
            f"{len(unproven)} file(s) not proven complete (a job that did not finish, "
            "a file changed since, or a layout without manifests):",
            file=sys.stderr,
        )
        for name in unproven:
            print(f"  {name}", file=sys.stderr)
        print(
            "Re-train them with: python3 -m snakemake --cores 4 --rerun-incomplete",
            file=sys.stderr,
        )
        return 1
    return 0


def _workdir(options) -> Path:
    """The directory given with --directory/-d, else the current one."""
    for index, option in enumerate(options):
        if option in ("--directory", "-d") and index + 1 < len(options):
            return Path(options[index + 1])
        if option.startswith("--directory="):
            return Path(option.split("=", 1)[1])
    return Path(".")


if __name__ == "__main__":
    sys.exit(main())
