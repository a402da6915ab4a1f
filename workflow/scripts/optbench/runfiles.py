"""Run files: the per-step loss TSV and its JSON sidecar, written atomically, read strictly.

Standard library only (the writer runs inside lean training jobs); the reader
returns plain lists that the summary code turns into arrays.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HEADER = "step\tloss\tevaluations\tlr"


class RunFileError(ValueError):
    """A run TSV is not in the pipeline's format; the message gives file and line."""


@contextmanager
def atomic_path(path: str | os.PathLike):
    """A temporary path beside ``path`` that replaces it only when the block succeeds.

    A job killed mid-write leaves a hidden temporary file, never a truncated
    file under the final name. The file gets the mode any new file would get
    (0666 less the umask, or the directory's default ACL), and its data reaches
    the disk before the rename, so a crash of the machine cannot leave an empty
    file under the final name either.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.*.part"):  # left by a killed writer
        stale.unlink(missing_ok=True)
    temporary = _new_temporary(final)
    try:
        yield temporary
        _sync(temporary)
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _new_temporary(final: Path) -> Path:
    # Not tempfile.mkstemp: it creates mode 0600 whatever the umask, and the
    # rename keeps that mode, so colleagues could not read the results.
    for _ in range(100):
        candidate = final.with_name(f".{final.name}.{secrets.token_hex(6)}.part")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name beside {final}")


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8", newline="\n")


def _rate_text(lr) -> str:
    return "" if lr is None else repr(float(lr))


def format_losses(losses, evaluations=None, lrs=None) -> str:
    """TSV text; repr() gives the shortest text that reads back as the same float.

    ``evaluations`` counts the loss evaluations of each step (1 for every step
    unless the optimizer re-evaluates through a closure, as L-BFGS does);
    ``lrs`` is the learning rate each step used (engines.scheduling: the first
    parameter group's), empty where the optimizer has none or it is not known.
    """
    if evaluations is None:
        evaluations = [1] * len(losses)
    if lrs is None:
        lrs = [None] * len(losses)
    rows = [HEADER] + [
        f"{step}\t{float(value)!r}\t{int(count)}\t{_rate_text(lr)}"
        for step, (value, count, lr) in enumerate(zip(losses, evaluations, lrs, strict=True))
    ]
    return "\n".join(rows) + "\n"


HELDOUT_HEADER = "step\theldout_loss\theldout_accuracy"


def heldout_path(tsv_path) -> Path:
    """The run's held-out table beside its TSV: ``seed3.tsv`` -> ``seed3.heldout.tsv``."""
    tsv_path = Path(tsv_path)
    return tsv_path.with_name(f"{tsv_path.stem}.heldout.tsv")


def format_heldout(curve: list[dict]) -> str:
    """The held-out table: one row per evaluation (``step``: steps done), the
    loss and the accuracy (empty where the problem has none), as ``repr``."""

    def cell(value) -> str:
        return "" if value is None else repr(float(value))

    rows = [HELDOUT_HEADER] + [
        f"{int(point['step'])}\t{cell(point.get('heldout_loss'))}\t"
        f"{cell(point.get('heldout_accuracy'))}"
        for point in curve
    ]
    return "\n".join(rows) + "\n"


def write_run(
    tsv_path, losses, sidecar_path, metadata: dict, evaluations=None, lrs=None, curve=None
) -> None:
    """The run's files: its sidecar, its held-out table where it has a held-out
    curve (``eval_every``; a stale one from an earlier run is removed), and its
    TSV last, so that a TSV under its final name always has the others."""
    write_text_atomic(sidecar_path, json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    table = heldout_path(tsv_path)
    if curve:
        write_text_atomic(table, format_heldout(curve))
    else:
        table.unlink(missing_ok=True)
    write_text_atomic(tsv_path, format_losses(losses, evaluations, lrs))


def first_nonfinite_step(losses) -> int | None:
    return next((step for step, value in enumerate(losses) if not math.isfinite(value)), None)


def _bad(path, number: int, problem: str) -> RunFileError:
    return RunFileError(
        f"{path}:{number}: {problem}. Delete the file so that the pipeline regenerates it."
    )


def read_run_columns(
    path: str | os.PathLike, steps: int | None = None
) -> tuple[list[float], list[int]]:
    """The losses and loss evaluations of one run TSV, checked line by line."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or lines[0] != HEADER:
        found = lines[0] if lines else "an empty file"
        expected = HEADER.replace("\t", "<TAB>")
        raise _bad(path, 1, f"expected the header {expected!r}, found {found!r}")
    losses, evaluations = [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        step = number - 2
        if len(fields) != 4 or fields[0] != str(step):
            raise _bad(
                path,
                number,
                f"expected step {step}, a loss, an evaluation count and a learning rate "
                f"(or nothing) separated by tabs, found {line!r}",
            )
        try:
            losses.append(float(fields[1]))
        except ValueError:
            raise _bad(path, number, f"loss {fields[1]!r} is not a number") from None
        if not fields[2].isdigit():
            raise _bad(path, number, f"evaluations {fields[2]!r} is not a count")
        evaluations.append(int(fields[2]))
        if fields[3]:
            try:
                float(fields[3])
            except ValueError:
                raise _bad(path, number, f"lr {fields[3]!r} is not a number") from None
    if steps is not None and len(losses) != steps:
        raise _bad(path, len(lines) + 1, f"expected {steps} steps, found {len(losses)}")
    return losses, evaluations


def read_run(path: str | os.PathLike, steps: int | None = None) -> list[float]:
    """The losses of one run TSV, checked line by line."""
    return read_run_columns(path, steps)[0]


def read_run_rows(path: str | os.PathLike) -> tuple[list[float], list[int], list[float | None]]:
    """A run TSV's losses, loss evaluations and learning rates (None where the
    field is empty), checked as strictly as ``read_run_columns`` checks them."""
    losses, evaluations = read_run_columns(path)
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().split("\n")[1 : 1 + len(losses)]
    rates = [float(field) if field else None for field in (line.split("\t")[3] for line in lines)]
    return losses, evaluations, rates


MANIFEST_HEADER = "tsv\tsidecar\ttsv_sha256\ttsv_bytes\ttsv_mtime_ns\tsettings_sha256\tcell_sha256"
# Written before the cell digest was recorded (a dry run then cannot say which
# cell changed); still read.
MANIFEST_HEADER_6 = "tsv\tsidecar\ttsv_sha256\ttsv_bytes\ttsv_mtime_ns\tsettings_sha256"
# Written before TSV sizes, times and settings digests were recorded; still read.
OLD_MANIFEST_HEADER = "tsv\tsidecar\ttsv_sha256"
# A job of run_files per_job (optbench.jobfiles): per run its name (the TSV path
# it would have per run), the job's run file, the digest of the run's row in it,
# the run file's size and modification time, the settings and cell digests.
JOB_MANIFEST_HEADER = (
    "run\tjob_file\trow_sha256\tfile_bytes\tfile_mtime_ns\tsettings_sha256\tcell_sha256"
)


@dataclass(frozen=True)
class ManifestEntry:
    """One run of a manifest: its files, the SHA-256 of its TSV and, in manifests
    of this format, the TSV's size and modification time (a cheap first check
    that it is unchanged) and the run's settings digest (optbench.reuse)."""

    tsv: str
    sidecar: str
    tsv_sha256: str
    tsv_bytes: int | None = None
    tsv_mtime_ns: int | None = None
    settings_sha256: str | None = None
    # The digest of the run's cell settings as planned (planning.jobs.cell_digest):
    # how a dry run tells "optimizer adamw changed" without torch.
    cell_sha256: str | None = None
    # A per-job manifest's run (JOB_MANIFEST_HEADER): ``tsv`` is then the run's
    # name, ``sidecar`` the job's run file, ``tsv_sha256`` the digest of its row
    # (jobfiles.row_digests) and the size and time those of the run file.
    per_job: bool = False


def write_job_manifest(path, job_file, runs) -> None:
    """A per-job training job's last output (header ``JOB_MANIFEST_HEADER``): one
    line per run, ``runs`` being (name, row digest, settings digest, cell digest)
    tuples, each with the job's run file and its size and modification time."""
    found = os.stat(job_file)
    lines = [JOB_MANIFEST_HEADER]
    for name, row, settings_digest, cell_digest in runs:
        lines.append(
            f"{name}\t{job_file}\t{row}\t{found.st_size}\t{found.st_mtime_ns}"
            f"\t{settings_digest}\t{cell_digest}"
        )
    write_text_atomic(path, "\n".join(lines) + "\n")


def write_manifest(path, runs) -> None:
    """A training job's last output: one line per run it holds (header
    ``MANIFEST_HEADER``): TSV path, sidecar path, SHA-256 of the TSV's bytes, the
    TSV's size and modification time (ns) as found after writing it, the run's
    settings digest and its cell's planned digest (each "" when not given).

    The summary jobs of packed layouts take the manifests as input rather than
    thousands of run files (Snakemake's planning and bookkeeping cost grows with
    inputs x outputs per job); written last, a manifest exists only when every
    run of its job does, and it records what the runs held when they were made,
    which is how a run changed by hand is found (recovery.changed_runs).
    ``runs``: (tsv path, sidecar path[, settings digest[, cell digest]]) tuples.
    """
    lines = [MANIFEST_HEADER]
    for tsv, sidecar, *digests in runs:
        digest = hashlib.sha256(Path(tsv).read_bytes()).hexdigest()
        found = os.stat(tsv)
        settings_digest, cell_digest = (list(digests) + ["", ""])[:2]
        lines.append(
            f"{tsv}\t{sidecar}\t{digest}\t{found.st_size}\t{found.st_mtime_ns}"
            f"\t{settings_digest}\t{cell_digest}"
        )
    write_text_atomic(path, "\n".join(lines) + "\n")


def read_manifest_entries(path) -> list[ManifestEntry]:
    """A manifest's runs; a manifest that is not one (another header, a short
    line) raises RunFileError."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    header = lines[0] if lines else ""
    per_job = header == JOB_MANIFEST_HEADER
    if header not in (MANIFEST_HEADER, MANIFEST_HEADER_6, OLD_MANIFEST_HEADER) and not per_job:
        raise _bad(path, 1, f"expected the header {MANIFEST_HEADER!r}")
    width = len(header.split("\t"))
    entries = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != width:
            raise _bad(
                path,
                number,
                f"expected {width} tab-separated fields ({header.replace(chr(9), ', ')}), "
                f"found {line!r}",
            )
        if width == 3:
            entries.append(ManifestEntry(*fields))
            continue
        try:
            size, mtime = int(fields[3]), int(fields[4])
        except ValueError:
            raise _bad(
                path, number, f"expected whole numbers of bytes and ns, found {line!r}"
            ) from None
        cell = fields[6] if width > 6 else ""
        entries.append(
            ManifestEntry(
                fields[0],
                fields[1],
                fields[2],
                size,
                mtime,
                fields[5] or None,
                cell or None,
                per_job,
            )
        )
    return entries


def read_manifest(path) -> list[tuple[str, str, str]]:
    """A manifest's (TSV path, sidecar path, TSV SHA-256) lines (read_manifest_entries)."""
    return [(e.tsv, e.sidecar, e.tsv_sha256) for e in read_manifest_entries(path)]


def unchanged_since(entry: ManifestEntry, root=".", manifest_mtime_ns: int | None = None) -> bool:
    """Whether the entry's TSV still holds what the manifest recorded. Cheap first:
    the same size and a modification time no later than the manifest's (Snakemake
    touches a job's outputs in order after it ends, the manifest last, so the
    recorded time itself is not kept) or equal to the recorded one; else the same
    SHA-256 (a file touched or copied without a change counts as unchanged).
    False when it is missing."""
    path = Path(root, entry.tsv)
    try:
        found = path.stat()
        if entry.tsv_bytes is not None and found.st_size == entry.tsv_bytes:
            if found.st_mtime_ns == entry.tsv_mtime_ns or (
                manifest_mtime_ns is not None and found.st_mtime_ns <= manifest_mtime_ns
            ):
                return True
        elif entry.tsv_bytes is not None:
            return False
        return hashlib.sha256(path.read_bytes()).hexdigest() == entry.tsv_sha256
    except OSError:
        return False


def proven_by_manifests(files, manifests, root=".") -> tuple[list[str], list[str]]:
    """Which of ``files`` the manifests prove complete, and which not (paths
    relative to ``root``, the directory the jobs ran in, as the manifests hold them).

    A manifest is written last by its job, so it proves its own job finished;
    its runs are proven while their TSV still has the recorded SHA-256 and
    their sidecar is there (a sidecar is renamed into place before its TSV).
    A manifest itself counts as proven when all its runs are.
    """
    runs: dict[str, bool] = {}
    whole: dict[str, bool] = {}
    rows_of: dict[str, dict[str, str]] = {}  # per job run file, read once
    for manifest in manifests:
        try:
            entries = read_manifest_entries(Path(root, manifest))
        except (OSError, RunFileError):
            whole[str(manifest)] = False
            continue
        complete = True
        for entry in entries:
            tsv, sidecar, digest = entry.tsv, entry.sidecar, entry.tsv_sha256
            if entry.per_job:  # its row in the job's run file (optbench.jobfiles)
                if sidecar not in rows_of:
                    rows_of[sidecar] = job_rows(Path(root, sidecar))
                runs[tsv] = rows_of[sidecar].get(tsv) == digest
                complete = complete and runs[tsv]
                continue
            try:
                intact = hashlib.sha256(Path(root, tsv).read_bytes()).hexdigest() == digest
            except OSError:
                intact = False
            intact = intact and Path(root, sidecar).is_file()
            runs[tsv] = runs[sidecar] = intact
            complete = complete and intact
        whole[str(manifest)] = complete
    proven, unproven = [], []
    for name in map(str, files):
        (proven if runs.get(name, whole.get(name, False)) else unproven).append(name)
    return proven, unproven


def job_rows(job_file) -> dict[str, str]:
    """Run name -> row digest of a per-job run file as it is now ({} when it is
    missing or unreadable). Imported here, not above: numpy, which the per-run
    layout's readers do not need."""
    from optbench import jobfiles

    try:
        runs = jobfiles.read(job_file)
    except (OSError, jobfiles.JobFileError):
        return {}
    return dict(zip(runs.name_list, jobfiles.row_digests(runs), strict=True))
