"""Run TSV format: exact round-trip, atomic replacement, strict reading."""

import math
import random
import struct

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


def test_format_is_header_then_one_row_per_step():
    # Written out by hand: repr's shortest round-trip text (0.1, not 0.10000000000000001).
    values = [1.5, math.inf, math.nan, 0.1, -0.0, 1e-45, 2.0**-1074, 1 / 3, -math.inf, 1e16]
    assert runfiles.format_losses(values) == (
        "step\tloss\tevaluations\n0\t1.5\t1\n1\tinf\t1\n2\tnan\t1\n3\t0.1\t1\n"
        "4\t-0.0\t1\n5\t1e-45\t1\n6\t5e-324\t1\n7\t0.3333333333333333\t1\n"
        "8\t-inf\t1\n9\t1e+16\t1\n"
    )
    # L-BFGS-style counts of loss evaluations per step go to the third column
    assert runfiles.format_losses([2.0, 0.5], [20, 3]) == (
        "step\tloss\tevaluations\n0\t2.0\t20\n1\t0.5\t3\n"
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
        ("", 1, "expected the header"),
        ("step,loss\n0,1.0\n", 1, "expected the header"),
        ("step\tloss\tevaluations\n0\t1.0\t1\n2\t0.5\t1\n", 3, "expected step 1"),
        ("step\tloss\tevaluations\n0\t1.0\t1\n1\tabc\t1\n", 3, "'abc' is not a number"),
        ("step\tloss\tevaluations\n0\t1.0\t1\t7\n", 2, "expected step 0"),
        ("step\tloss\tevaluations\n0\t1.0\n", 2, "expected step 0"),
        ("step\tloss\tevaluations\n0\t1.0\t-1\n", 2, "evaluations '-1' is not a count"),
        ("step\tloss\n0\t1.0\n", 1, "expected the header"),
        ("step\tloss\tevaluations\n0\t1.0\t1\n", 3, "expected 2 steps, found 1"),
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
