"""The torch-free GPU probe behind the training jobs' `gpu` resource."""

import os
from pathlib import Path

import pytest

from optbench.planning import gpus
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


@pytest.mark.parametrize(
    ("device", "cluster", "visible", "expected"),
    [
        ("cpu", False, True, 0),
        ("cpu", True, True, 0),
        ("cuda", False, True, 1),
        ("cuda:1", True, False, 1),
        ("auto", True, False, 1),  # a cluster: the node has one
        ("auto", False, True, 1),
        ("auto", False, False, gpus.DECIDED_BY_EXECUTOR),
    ],
)
def test_training_gpus_follow_the_device_and_where_jobs_run(device, cluster, visible, expected):
    assert gpus.training_gpus(device, cluster, visible) == expected


def test_a_cuda_device_without_a_visible_gpu_is_refused_only_for_local_jobs():
    message = gpus.device_refusal("cuda:0", cluster_run=False, local_visible=False)
    assert message.startswith("config key device: cuda:0 asks for a CUDA GPU")
    assert "--profile profiles/slurm" in message
    assert gpus.device_refusal("cuda:0", cluster_run=True, local_visible=False) is None
    assert gpus.device_refusal("cuda", cluster_run=False, local_visible=True) is None
    assert gpus.device_refusal("auto", cluster_run=False, local_visible=False) is None
