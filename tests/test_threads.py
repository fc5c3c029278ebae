"""The CPU budget: affinity mask and cgroup quota (v1 and v2), TUNELOOP_THREADS, OMP_NUM_THREADS left alone."""

from __future__ import annotations

import os

import pytest

from tuneloop import threads
from tuneloop.errors import TuneloopError


def cgroup(tmp_path, v2: str | None = None, v1: tuple[str, str] | None = None):
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2)
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(v1[0])
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(v1[1])
    return tmp_path


@pytest.mark.parametrize("v2, v1, quota", [
    ("150000 100000\n", None, 1.5), ("max 100000\n", None, None), (None, ("-1", "100000"), None),
    (None, ("50000", "100000"), 0.5), (None, ("300000", "100000"), 3.0), (None, None, None), ("garbage", None, None),
])
def test_cgroup_quota(tmp_path, v2, v1, quota):
    assert threads.cgroup_quota(cgroup(tmp_path, v2, v1)) == quota


def test_the_budget_is_the_smaller_of_affinity_and_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert threads.cpu_budget(cgroup(tmp_path)) == 4
    assert threads.cpu_budget(cgroup(tmp_path / "", v2="150000 100000")) == 2  # 1.5 CPUs of time: 2 threads
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert threads.cpu_budget(tmp_path) == 1


def test_overrides(monkeypatch):
    monkeypatch.setenv("TUNELOOP_THREADS", "3")
    assert threads.wanted() == 3
    monkeypatch.setenv("TUNELOOP_THREADS", "zero")
    with pytest.raises(TuneloopError, match="TUNELOOP_THREADS"):
        threads.wanted()
    monkeypatch.delenv("TUNELOOP_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.wanted() is None


def test_apply_sets_torch(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("TUNELOOP_THREADS", "1")
    try:
        assert threads.apply() == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
