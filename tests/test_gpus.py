"""The torch-free GPU probe behind the training jobs' `gpu` resource."""

import os
from pathlib import Path

from optbench.planning.gpus import local_gpu_visible


def test_no_driver_means_no_gpu(tmp_path):
    assert not local_gpu_visible({}, proc=tmp_path / "missing", dev=tmp_path)


def test_driver_entries_mean_a_gpu_unless_hidden(tmp_path):
    (tmp_path / "nvidia0").touch()
    assert local_gpu_visible({}, proc=tmp_path / "missing", dev=tmp_path)
    assert local_gpu_visible({"CUDA_VISIBLE_DEVICES": "0"}, proc=tmp_path / "x", dev=tmp_path)
    for hidden in ("", "-1"):
        env = {"CUDA_VISIBLE_DEVICES": hidden}
        assert not local_gpu_visible(env, proc=tmp_path / "x", dev=tmp_path)


def test_this_machine_matches_its_driver_entries():
    expected = os.path.isdir("/proc/driver/nvidia/gpus") and bool(
        os.listdir("/proc/driver/nvidia/gpus")
    )
    if os.environ.get("CUDA_VISIBLE_DEVICES", "x").strip() in ("", "-1"):
        expected = False
    assert local_gpu_visible(dev=Path("/nonexistent")) == expected
