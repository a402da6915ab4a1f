"""Run TSV format: exact round-trip, atomic replacement, strict reading."""

import math
import os
import random
import stat
import struct
import subprocess
import sys

import pytest

from optbench import runfiles


def float32_values(count, seed=0):
    rng = random.Random(seed)
    values = []
    for _ in range(count):
        bits = rng.getrandbits(32)
        value = struct.unpack("<f", struct.pack("<I", bits))[0]
        values.append(value)
    return values + [0.0, -0.0, 1e-45, 3.4028234663852886e38, math.inf, -math.inf, math.nan]


def test_round_trip_is_exact_for_float32_values(tmp_path):
    values = float32_values(2000)
    path = tmp_path / "run.tsv"
    runfiles.write_text_atomic(path, runfiles.format_losses(values))
    # Read back by the pipeline's reader and, independently, by float() on each field.
    by_reader = runfiles.read_run(path, len(values))
    by_float = [float(line.split("\t")[1]) for line in path.read_text().splitlines()[1:]]
    for back in (by_reader, by_float):
        for written, read in zip(values, back, strict=True):
            if math.isnan(written):
                assert math.isnan(read)
            else:
                assert struct.pack("<d", written) == struct.pack("<d", read)  # -0.0 too


# The header line of a run TSV, as the file contract (docs/outputs.md) spells it.
HEADER = "step\tloss\tevaluations\tlr\n"


def test_format_is_header_then_one_row_per_step():
    # Written out by hand: repr's shortest round-trip text (0.1, not 0.10000000000000001).
    values = [1.5, math.inf, math.nan, 0.1, -0.0, 1e-45, 2.0**-1074, 1 / 3, -math.inf, 1e16]
    assert runfiles.format_losses(values) == (
        "step\tloss\tevaluations\tlr\n0\t1.5\t1\t\n1\tinf\t1\t\n2\tnan\t1\t\n3\t0.1\t1\t\n"
        "4\t-0.0\t1\t\n5\t1e-45\t1\t\n6\t5e-324\t1\t\n7\t0.3333333333333333\t1\t\n"
        "8\t-inf\t1\t\n9\t1e+16\t1\t\n"
    )
    # L-BFGS-style counts of loss evaluations per step go to the third column,
    # each step's learning rate to the fourth (empty where there is none)
    assert runfiles.format_losses([2.0, 0.5], [20, 3], [0.1, None]) == (
        "step\tloss\tevaluations\tlr\n0\t2.0\t20\t0.1\n1\t0.5\t3\t\n"
    )


def test_atomic_path_leaves_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "out.tsv"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), runfiles.atomic_path(path) as temporary:
        temporary.write_text("half a fi")
        raise RuntimeError("killed")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.tsv"]


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        (
            "",
            1,
            "expected the header 'step<TAB>loss<TAB>evaluations<TAB>lr', found 'an empty file'",
        ),
        (
            "step,loss\n0,1.0\n",
            1,
            "expected the header 'step<TAB>loss<TAB>evaluations<TAB>lr', found 'step,loss'",
        ),
        (f"{HEADER}0\t1.0\t1\t\n2\t0.5\t1\t\n", 3, "expected step 1"),
        (f"{HEADER}0\t1.0\t1\t\n1\tabc\t1\t\n", 3, "'abc' is not a number"),
        (f"{HEADER}0\t1.0\t1\t0.1\t7\n", 2, "expected step 0"),
        (f"{HEADER}0\t1.0\t1\n", 2, "expected step 0"),  # the rows of an older version
        (f"{HEADER}0 1.0 1 0.1\n", 2, "expected step 0"),  # tabs, not blanks
        (f"{HEADER}0\t1.0\t-1\t\n", 2, "evaluations '-1' is not a count"),
        (f"{HEADER}0\t1.0\t1\tfast\n", 2, "lr 'fast' is not a number"),
        ("step\tloss\tevaluations\n0\t1.0\t1\n", 1, "expected the header"),  # older version
        (f"{HEADER}0\t1.0\t1\t\n", 3, "expected 2 steps, found 1"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, text, line, problem):
    path = tmp_path / "seed0.tsv"
    path.write_text(text)
    with pytest.raises(runfiles.RunFileError) as error:
        runfiles.read_run(path, 2)
    assert f"{path}:{line}:" in str(error.value)
    assert problem in str(error.value)


def test_first_nonfinite_step():
    assert runfiles.first_nonfinite_step([1.0, 2.0]) is None
    assert runfiles.first_nonfinite_step([1.0, math.inf, math.nan]) == 1


def test_read_run_columns_returns_both_columns_of_a_hand_written_file(tmp_path):
    path = tmp_path / "seed0.tsv"
    path.write_text(f"{HEADER}0\t2.0\t20\t0.1\n1\t0.5\t3\t\n")
    assert runfiles.read_run_columns(path, 2) == ([2.0, 0.5], [20, 3])
    # Without the final newline the last row still counts.
    path.write_text(f"{HEADER}0\t2.0\t20\t0.1\n1\t0.5\t3\t0.05")
    assert runfiles.read_run_columns(path, 2) == ([2.0, 0.5], [20, 3])


def test_format_losses_refuses_counts_of_another_length():
    # A silent zip would drop the last step of the run.
    with pytest.raises(ValueError):
        runfiles.format_losses([1.0, 0.5], [1])
    with pytest.raises(ValueError):
        runfiles.format_losses([1.0], [1, 1])


def test_written_file_gets_0666_less_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        runfiles.write_text_atomic(tmp_path / "out.tsv", "x\n")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out.tsv").stat().st_mode) == 0o666 & ~0o022


def test_new_temporary_skips_a_taken_name_and_names_the_file_when_all_are(tmp_path, monkeypatch):
    final = tmp_path / "out.tsv"
    taken = tmp_path / ".out.tsv.aaaaaaaaaaaa.part"
    taken.write_text("another writer's\n")
    names = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    monkeypatch.setattr(runfiles.secrets, "token_hex", lambda nbytes: next(names))
    assert runfiles._new_temporary(final) == tmp_path / ".out.tsv.bbbbbbbbbbbb.part"
    assert taken.read_text() == "another writer's\n"
    monkeypatch.setattr(runfiles.secrets, "token_hex", lambda nbytes: "aaaaaaaaaaaa")
    with pytest.raises(FileExistsError, match=f"no free temporary name beside {final}"):
        runfiles._new_temporary(final)


def test_files_are_utf8_whatever_the_locale(tmp_path):
    # Under the plain C locale (no coercion, no UTF-8 mode) Python's default
    # encoding is ASCII; run files and summaries must still be UTF-8.
    script = (
        "import sys; from pathlib import Path; from optbench import runfiles\n"
        "out = Path(sys.argv[1])\n"
        "runfiles.write_text_atomic(out / 'w.txt', 'Adam \\u00b5 \\u2264 1\\n')\n"
        "try:\n"
        "    runfiles.read_run(out / 'r.tsv')\n"
        "except runfiles.RunFileError as error:\n"
        "    print(str(error).encode('ascii', 'backslashreplace').decode())\n"
    )
    (tmp_path / "r.tsv").write_bytes("st\u00e9p\n".encode())
    env = {
        **os.environ,
        "LC_ALL": "C",
        "PYTHONCOERCECLOCALE": "0",
        "PYTHONUTF8": "0",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    process = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert process.returncode == 0, process.stderr
    assert (tmp_path / "w.txt").read_bytes() == "Adam \u00b5 \u2264 1\n".encode()
    assert "found 'st\\xe9p'" in process.stdout
    # the same file and message in this process's locale (mutmut also maps tests
    # to functions by the calls it sees here)
    runfiles.write_text_atomic(tmp_path / "here.txt", "Adam \u00b5 \u2264 1\n")
    assert (tmp_path / "here.txt").read_bytes() == (tmp_path / "w.txt").read_bytes()
    with pytest.raises(runfiles.RunFileError, match="found 'st\u00e9p'"):
        runfiles.read_run(tmp_path / "r.tsv")
