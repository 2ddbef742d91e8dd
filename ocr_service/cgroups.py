"""What the container lets this process use: CPUs (quota and affinity) and memory, from its cgroup.

``os.cpu_count()`` counts the host's cores, not the container's share: a container started
with ``--cpus 1.5`` on a 16-core host would otherwise start 16 workers that fight over
1.5 cores. The limit may sit on any cgroup above the process's own (a pod's, a slice's),
so every level from the process's cgroup up to the hierarchy's root is read and the
tightest wins. Both layouts are read: cgroup v2 (``cpu.max``, ``memory.max``; at the root
of the mount, or under ``unified/`` on hybrid hosts) and v1 (``cpu.cfs_quota_us`` /
``cpu.cfs_period_us``, ``memory.limit_in_bytes`` under each controller's mount).

A file that is missing, unreadable or malformed says nothing: the next source decides, and
with none the answer is the CPUs this process may run on (``sched_getaffinity``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path, PurePosixPath

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
# v1 reports "no limit" as the largest page-aligned 64-bit value; anything this large is none.
_NO_MEMORY_LIMIT = 1 << 60


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _positive_int(text: str) -> int | None:
    # str.isdigit accepts superscripts and other digits int() refuses; ASCII only.
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value > 0 else None


class Cgroup:
    """The cgroup files that apply to this process, under an injectable root (tests use a folder)."""

    def __init__(self, root: Path = CGROUP_ROOT, self_cgroup: Path = PROC_SELF_CGROUP) -> None:
        self.root = root
        self._memberships = self._parse_memberships(_read(self_cgroup) or "")

    @staticmethod
    def _parse_memberships(text: str) -> dict[str, PurePosixPath]:
        """``/proc/self/cgroup``: ``ID:CONTROLLERS:PATH`` per line; v2 is ``0::PATH``, keyed ''."""
        memberships: dict[str, PurePosixPath] = {}
        for line in text.splitlines():
            parts = line.split(":", 2)
            if len(parts) != 3 or not parts[2].startswith("/"):
                continue
            for controller in parts[1].split(",") if parts[1] else [""]:
                memberships[controller] = PurePosixPath(parts[2])
        return memberships

    def _levels(self, mount: Path, controller: str) -> Iterator[Path]:
        """The process's cgroup folder and each one above it, that exist under ``mount``.

        Inside a container with its own cgroup namespace the path is ``/`` (the mount is
        the container's cgroup); without one, the host's path may not exist under the
        mount, and only the mount's root is read.
        """
        own = self._memberships.get(controller, PurePosixPath("/"))
        for level in (own, *own.parents):
            folder = mount.joinpath(*level.parts[1:])
            if folder.is_dir():
                yield folder

    def _v2_mount(self) -> Path | None:
        for mount in (self.root, self.root / "unified"):
            if (mount / "cgroup.controllers").is_file():
                return mount
        return None

    def _v1_mount(self, *names: str) -> Path | None:
        # Hosts mount cpu alone, or co-mounted with cpuacct under either order's name.
        return next((self.root / name for name in names if (self.root / name).is_dir()), None)

    def cpu_quota(self) -> Fraction | None:
        """The tightest CPU quota (in CPUs, e.g. 3/2) over all levels, or None without one."""
        quotas: list[Fraction] = []
        if (v2 := self._v2_mount()) is not None:
            for folder in self._levels(v2, ""):
                if (raw := _read(folder / "cpu.max")) is not None:
                    quotas.extend(_parse_cpu_max(raw))
        if (v1 := self._v1_mount("cpu", "cpu,cpuacct", "cpuacct,cpu")) is not None:
            for folder in self._levels(v1, "cpu"):
                quota = _read(folder / "cpu.cfs_quota_us")
                period = _read(folder / "cpu.cfs_period_us")
                if quota is not None and period is not None:
                    quotas.extend(_parse_cfs(quota, period))
        return min(quotas, default=None)

    def memory_limit_bytes(self) -> int | None:
        """The tightest memory limit over all levels, or None without one."""
        limits: list[int] = []
        if (v2 := self._v2_mount()) is not None:
            for folder in self._levels(v2, ""):
                limits.extend(_parse_bytes(_read(folder / "memory.max")))
        if (v1 := self._v1_mount("memory")) is not None:
            for folder in self._levels(v1, "memory"):
                limits.extend(_parse_bytes(_read(folder / "memory.limit_in_bytes")))
        return min(limits, default=None)


def _parse_cpu_max(raw: str) -> list[Fraction]:
    """``cpu.max``: ``QUOTA PERIOD`` in µs, QUOTA ``max`` for none."""
    fields = raw.split()
    if len(fields) != 2 or fields[0] == "max":
        return []
    quota, period = _positive_int(fields[0]), _positive_int(fields[1])
    return [Fraction(quota, period)] if quota and period else []


def _parse_cfs(raw_quota: str, raw_period: str) -> list[Fraction]:
    """v1: ``cpu.cfs_quota_us`` (-1 for none) over ``cpu.cfs_period_us``."""
    quota, period = _positive_int(raw_quota), _positive_int(raw_period)
    return [Fraction(quota, period)] if quota and period else []


def _parse_bytes(raw: str | None) -> list[int]:
    value = _positive_int(raw) if raw is not None else None
    return [value] if value is not None and value < _NO_MEMORY_LIMIT else []


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def available_cpus(cgroup: Cgroup | None = None, affinity: Callable[[], int] = _affinity) -> int:
    """Whole CPUs this process may use: its affinity, capped by the quota rounded down, at least 1.

    Rounded down because a worker per started core would be throttled: 1.5 CPUs run one
    worker at full speed, two at three quarters each with their threads descheduled mid-page.
    """
    cpus = max(1, affinity())
    quota = (cgroup or Cgroup()).cpu_quota()
    if quota is not None:
        cpus = min(cpus, int(quota))
    return max(1, cpus)
