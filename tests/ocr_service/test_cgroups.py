"""CPU quota and memory limit from the cgroup: any quota, any level, any damaged file."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ocr_service.cgroups import Cgroup, available_cpus

PERIODS = st.integers(1_000, 1_000_000)
QUOTAS = st.integers(1, 64_000_000)
AFFINITY = st.integers(1, 256)
# A cgroup path of the process, as /proc/self/cgroup writes it.
PATHS = st.lists(st.from_regex(r"[a-z0-9_.-]{1,12}", fullmatch=True).filter(lambda s: s not in {".", ".."}), max_size=4)
MALFORMED = st.one_of(
    st.text(max_size=40).filter(lambda t: not _well_formed(t)),
    st.sampled_from(["", "max", "0 100000", "100000 0", "-5 100000", "1.5 100000", "²00000 100000", "1 2 3"]),
)


def _well_formed(text: str) -> bool:
    fields = text.split()
    return len(fields) == 2 and all(f.isascii() and f.isdigit() and int(f) > 0 for f in fields)


@contextmanager
def hierarchy(self_cgroup: str, files: dict[str, str]) -> Iterator[Cgroup]:
    """A cgroup mount in a temporary folder: ``files`` maps paths under it to their contents."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "fs"
        for name, content in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(content)
        (Path(tmp) / "cgroup").write_text(self_cgroup)
        yield Cgroup(root, Path(tmp) / "cgroup")


def v2(own: list[str], quotas: dict[int, str]) -> dict[str, str]:
    """A v2 mount with cpu.max files at the given depths of the process's cgroup path."""
    files = {"cgroup.controllers": "cpu memory"}
    for depth, content in quotas.items():
        files["/".join([*own[:depth], "cpu.max"])] = content
    return files


@settings(max_examples=150, deadline=None)
@given(quota=QUOTAS, period=PERIODS, affinity=AFFINITY)
def test_a_v2_quota_gives_whole_cpus_rounded_down_within_the_affinity(quota: int, period: int, affinity: int) -> None:
    with hierarchy("0::/\n", v2([], {0: f"{quota} {period}"})) as cgroup:
        assert cgroup.cpu_quota() == Fraction(quota, period)
        assert available_cpus(cgroup, lambda: affinity) == max(1, min(affinity, quota // period))


@settings(max_examples=100, deadline=None)
@given(period=PERIODS, affinity=AFFINITY)
def test_no_v2_quota_leaves_the_affinity(period: int, affinity: int) -> None:
    with hierarchy("0::/\n", v2([], {0: f"max {period}"})) as cgroup:
        assert cgroup.cpu_quota() is None
        assert available_cpus(cgroup, lambda: affinity) == affinity


@settings(max_examples=150, deadline=None)
@given(own=PATHS, data=st.data(), affinity=AFFINITY)
def test_the_tightest_quota_on_any_level_above_the_process_wins(
    own: list[str], data: st.DataObject, affinity: int
) -> None:
    depths = data.draw(st.sets(st.integers(0, len(own)), min_size=1))
    limits = {d: (data.draw(QUOTAS), data.draw(PERIODS)) for d in depths}
    self_cgroup = "0::/" + "/".join(own) + "\n"
    with hierarchy(self_cgroup, v2(own, {d: f"{q} {p}" for d, (q, p) in limits.items()})) as cgroup:
        tightest = min(Fraction(q, p) for q, p in limits.values())
        assert cgroup.cpu_quota() == tightest
        assert available_cpus(cgroup, lambda: affinity) == max(1, min(affinity, int(tightest)))


@settings(max_examples=150, deadline=None)
@given(quota=st.one_of(QUOTAS, st.just(-1)), period=PERIODS, affinity=AFFINITY, own=PATHS)
def test_a_v1_cfs_quota_counts_and_minus_one_means_none(quota: int, period: int, affinity: int, own: list[str]) -> None:
    # Docker on v1 without a cgroup namespace: the host's path does not exist under the mount,
    # whose root is the container's own cgroup.
    files = {"cpu,cpuacct/cpu.cfs_quota_us": f"{quota}\n", "cpu,cpuacct/cpu.cfs_period_us": f"{period}\n"}
    with hierarchy("4:cpu,cpuacct:/" + "/".join(own) + "\n", files) as cgroup:
        expected = affinity if quota == -1 else max(1, min(affinity, quota // period))
        assert available_cpus(cgroup, lambda: affinity) == expected


@settings(max_examples=200, deadline=None)
@given(content=MALFORMED, v1_quota=MALFORMED, v1_period=MALFORMED, affinity=AFFINITY, self_cgroup=st.text(max_size=60))
def test_damaged_files_say_nothing_and_the_affinity_decides(
    content: str, v1_quota: str, v1_period: str, affinity: int, self_cgroup: str
) -> None:
    files = {**v2([], {0: content}), "cpu/cpu.cfs_quota_us": v1_quota, "cpu/cpu.cfs_period_us": v1_period}
    with hierarchy(self_cgroup, files) as cgroup:
        assert cgroup.cpu_quota() is None
        assert available_cpus(cgroup, lambda: affinity) == affinity


def test_missing_files_and_a_folder_where_a_file_belongs_say_nothing(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").mkdir()
    (tmp_path / "cgroup.controllers").write_text("cpu")
    cgroup = Cgroup(tmp_path, tmp_path / "no-such-file")
    assert cgroup.cpu_quota() is None and cgroup.memory_limit_bytes() is None
    assert available_cpus(Cgroup(tmp_path / "nothing", tmp_path / "nothing"), lambda: 3) == 3


def test_a_quota_under_one_cpu_still_runs_one_worker(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu")
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(Cgroup(tmp_path, tmp_path / "none"), lambda: 8) == 1


@settings(max_examples=200, deadline=None)
@given(own=PATHS, data=st.data())
def test_the_tightest_memory_limit_on_any_level_wins_and_max_is_none(own: list[str], data: st.DataObject) -> None:
    values = data.draw(st.lists(st.one_of(st.integers(1, 1 << 50), st.just("max")), min_size=1, max_size=len(own) + 1))
    files = {"cgroup.controllers": "memory"}
    for depth, value in enumerate(values):
        files["/".join([*own[:depth], "memory.max"])] = f"{value}\n"
    with hierarchy("0::/" + "/".join(own) + "\n", files) as cgroup:
        numbers = [v for v in values if isinstance(v, int)]
        assert cgroup.memory_limit_bytes() == (min(numbers) if numbers else None)


def test_a_v1_memory_limit_on_the_process_cgroup_counts_and_the_unlimited_value_does_not(tmp_path: Path) -> None:
    (tmp_path / "memory" / "pod" / "box").mkdir(parents=True)
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (tmp_path / "memory" / "pod" / "box" / "memory.limit_in_bytes").write_text(f"{6 << 30}\n")
    (tmp_path / "cgroup").write_text("4:memory:/pod/box\n")
    assert Cgroup(tmp_path, tmp_path / "cgroup").memory_limit_bytes() == 6 << 30
