"""Tracker export, offline: W&B runs written as local files (read back here with a
reader of their record format, independent of wandb's code) and TensorBoard event
files hold one run per training run, with its config and its curves."""

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from optbench import runfiles

TOOL = REPO / "tools" / "trackers.py"
# Losses a float round trip could get wrong: shortest repr digits, tiny, inf, nan.
PLANTED = {
    ("mse", "adam", "base", 0): [0.1 + 0.2, 1e-300, 2.5, math.inf, math.nan],
    ("mse", "sgd", "lr0.1", 0): [3.0, 1.0 / 3.0, 0.25, 0.125, 7.0],
    ("mse", "sgd", "lr0.1", 1): [4.0, 2.0, 1.0, 0.5, 0.25],
}
HELDOUT = [{"step": 5, "heldout_loss": 0.75, "heldout_accuracy": 0.5}]


@pytest.fixture
def study(tmp_path):
    root = tmp_path / "results"
    for (loss, optimizer, variant, seed), losses in PLANTED.items():
        tsv = root / f"runs/linear/{loss}/{optimizer}/{variant}/seed{seed}.tsv"
        sidecar = {
            "problem": {"name": "linear", "kwargs": {"dim": 3}},
            "loss": {"name": loss, "class": "MSELoss"},
            "optimizer": {"name": optimizer, "class": optimizer.upper(), "kwargs": {"lr": 0.1}},
            "steps": 5,
            "settings_sha256": f"{optimizer}{variant}{seed}",
            "numerics": {"mode": "portable"},
            "heldout_curve": HELDOUT if optimizer == "sgd" else [],
        }
        lrs = [0.1] * 5 if optimizer == "sgd" else None
        runfiles.write_run(
            tsv, losses, tsv.with_suffix(".json"), sidecar, None, lrs, sidecar["heldout_curve"]
        )
    return root


def export(tracker, study, out):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    # Any attempt to reach a server would fail here: the export must not need one.
    environment["WANDB_BASE_URL"] = "http://127.0.0.1:9"
    environment["HOME"] = str(out.parent / "home")  # nothing written to the user's home
    process = subprocess.run(
        [sys.executable, str(TOOL), tracker, str(study), str(out)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    return process


def wandb_records(path: Path) -> list[bytes]:
    """The records of a .wandb file: a 7-byte header (':W&B', magic, version), then
    32 KiB blocks of chunks (CRC32, length, type: full, first, middle, last)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, block, records, pending = 7, 32768, [], b""
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 1:
            records.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            records.append(pending + chunk)
    return records


def same(a, b) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_wandb_offline_holds_one_run_per_training_run_with_config_and_curves(study, tmp_path):
    pytest.importorskip("wandb", reason="wandb is in requirements-trackers.txt")
    from wandb.proto import wandb_internal_pb2

    out = tmp_path / "wandb-export"
    export("wandb", study, out)
    files = sorted(out.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 3
    found = {}
    for path in files:
        config, history = {}, {}
        for data in wandb_records(path):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                name = record.run.display_name
                assert record.run.project == "optbench"
                config |= {i.key: json.loads(i.value_json) for i in record.run.config.update}
            elif kind == "history":
                items = {i.key or "/".join(i.nested_key): i.value_json for i in record.history.item}
                history[int(items.pop("_step"))] = {
                    # json reads W&B's NaN and Infinity as Python does.
                    k: float(json.loads(v))
                    for k, v in items.items()
                    if not k.startswith("_")
                }
        found[name] = (config, history)
    assert set(found) == {
        "linear/mse/adam/base/seed0",
        "linear/mse/sgd/lr0.1/seed0",
        "linear/mse/sgd/lr0.1/seed1",
    }
    for (loss, optimizer, variant, seed), losses in PLANTED.items():
        config, history = found[f"linear/{loss}/{optimizer}/{variant}/seed{seed}"]
        assert config["optimizer"] == optimizer and config["variant"] == variant
        assert config["seed"] == seed
        assert config["settings"]["settings_sha256"] == f"{optimizer}{variant}{seed}"
        assert config["settings"]["numerics_mode"] == "portable"
        logged = [history[step]["train_loss"] for step in range(5)]
        assert all(same(a, b) for a, b in zip(logged, losses, strict=True)), logged
        assert all(history[step]["evaluations"] == 1 for step in range(5))
        if optimizer == "sgd":
            assert [history[step]["lr"] for step in range(5)] == [0.1] * 5
            assert history[5] == {"heldout_loss": 0.75, "heldout_accuracy": 0.5}
        else:
            assert "lr" not in history[0] and 5 not in history


def test_tensorboard_event_files_hold_each_runs_curves(study, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is in requirements-trackers.txt")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    export("tensorboard", study, out)
    for (loss, optimizer, variant, seed), losses in PLANTED.items():
        events = EventAccumulator(str(out / f"linear/{loss}/{optimizer}/{variant}/seed{seed}"))
        events.Reload()
        scalars = events.Scalars("train_loss")
        assert [s.step for s in scalars] == [0, 1, 2, 3, 4]
        # TensorBoard keeps scalars as float32.
        expected = np.array(losses, dtype=np.float32)
        assert all(same(s.value, float(e)) for s, e in zip(scalars, expected, strict=True))
        tags = set(events.Tags()["scalars"])
        if optimizer == "sgd":
            assert [(s.step, s.value) for s in events.Scalars("heldout_loss")] == [(5, 0.75)]
            assert "lr" in tags
        else:
            assert "lr" not in tags and "heldout_loss" not in tags


def test_a_folder_without_runs_is_refused_with_the_fix(tmp_path):
    process = subprocess.run(
        [sys.executable, str(TOOL), "wandb", str(tmp_path), str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert process.returncode == 1
    assert "no run files. Fix: give the study's folder" in process.stderr
