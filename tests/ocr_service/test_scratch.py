"""What a killed service leaves in TMPDIR is removed at the next start, and nothing else is:
not the folders of a service that still runs, not other programs' files in a shared /tmp."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocr_service.scratch import PREFIX, ScratchFolder, Swept, sweep
from tests.support.servers import wait_until_healthy

ROOT = Path(__file__).resolve().parents[2]


def fill(folder: Path, sizes: list[int]) -> int:
    (folder / "deeper").mkdir()
    for index, size in enumerate(sizes):
        (folder / ("deeper" if index % 2 else ".") / f"{index}.stacks").write_bytes(b"x" * size)
    return sum(sizes)


def others(parent: Path, outside: Path) -> set[str]:
    """What a shared /tmp holds beside the service's folders."""
    (parent / "tmpq1w2e3").write_bytes(b"someone's")
    (parent / "ocr-page-reports-old").mkdir()  # an older version's name: not ours to judge
    (parent / f"{PREFIX}a-file").write_bytes(b"not a folder")
    (parent / f"{PREFIX}link").symlink_to(outside, target_is_directory=True)
    return {"tmpq1w2e3", "ocr-page-reports-old", f"{PREFIX}a-file", f"{PREFIX}link"}


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    dead=st.lists(st.lists(st.integers(0, 5000), max_size=4), max_size=4),
    alive=st.lists(st.lists(st.integers(0, 5000), max_size=4), max_size=3),
)
def test_the_sweep_removes_the_folders_no_process_holds(
    tmp_path_factory: pytest.TempPathFactory, dead: list[list[int]], alive: list[list[int]]
) -> None:
    parent, outside = tmp_path_factory.mktemp("tmp"), tmp_path_factory.mktemp("outside")
    (outside / "keep").write_bytes(b"keep")
    kept = others(parent, outside)
    live = [ScratchFolder.create("page-reports", parent) for _ in alive]
    try:
        freed = 0
        for sizes in dead:
            # A folder whose process died: named alike, its lock gone with the process.
            freed += fill(Path(tempfile.mkdtemp(prefix=f"{PREFIX}page-reports-", dir=parent)), sizes)
        for folder, sizes in zip(live, alive, strict=True):
            fill(folder.path, sizes)

        assert sweep(parent) == Swept(len(dead), freed)
        assert {p.name for p in parent.iterdir()} == kept | {f.path.name for f in live}
        assert (outside / "keep").read_bytes() == b"keep"
        assert sweep(parent) == Swept(0, 0)
    finally:
        for folder in live:
            folder.remove()
    assert {p.name for p in parent.iterdir()} == kept


def test_a_folder_held_by_another_live_process_is_kept(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from ocr_service.scratch import ScratchFolder; from pathlib import Path; "
            "print(ScratchFolder.create('page-reports', Path(sys.argv[1])).path, flush=True); time.sleep(600)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    try:
        assert holder.stdout is not None
        held = Path(holder.stdout.readline().strip())
        assert sweep(tmp_path) == Swept(0, 0) and held.is_dir()
    finally:
        holder.kill()
        holder.wait()
    assert sweep(tmp_path) == Swept(1, 0) and not held.exists()


SERVICE = """
import sys, uvicorn
from ocr_service.app import create_app
from ocr_service.logs import configure_logging
from ocr_service.settings import Settings
from tests.support.fake_engine import ENGINE
configure_logging("INFO", False)
settings = Settings(models_dir=sys.argv[1], workers=1, memory_limit_mb=8192)
uvicorn.run(create_app(settings, engine=ENGINE), host="127.0.0.1", port=int(sys.argv[2]), log_config=None)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_service(tmp_path: Path, temp: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(ROOT)}
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", SERVICE, str(tmp_path / "models"), str(port)], env=env, cwd=ROOT, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=10) as client:
        wait_until_healthy(client, 120)
    return process, url


def spooled_in(pid: int, temp: Path) -> bool:
    """Whether process ``pid`` has a file open in ``temp`` (an upload being spooled)."""
    fds = Path(f"/proc/{pid}/fd")
    return any(os.readlink(fd).startswith(f"{temp}/") for fd in fds.iterdir() if fd.is_symlink())


@pytest.mark.slow
def test_a_killed_service_leaves_only_what_the_next_start_sweeps(tmp_path: Path) -> None:
    temp, log = tmp_path / "tmp", tmp_path / "service.log"
    temp.mkdir()
    killed, url = start_service(tmp_path, temp, log)
    upload = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    try:
        # An upload of 4 MB, killed after 2 MB: spooled to disk, beyond the 1 MB kept in memory.
        boundary = b"b0undary"
        head = b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="s.pdf"\r\n\r\n'
        upload.sendall(
            b"POST /ocr HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=" + boundary + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % (4 * 2**20) + head + b"%PDF-" + b"\0" * (2 * 2**20)
        )
        deadline = time.monotonic() + 60
        while not spooled_in(killed.pid, temp):
            assert time.monotonic() < deadline, "the upload was never spooled to TMPDIR"
            time.sleep(0.05)
        left = [p.name for p in temp.iterdir()]
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
    finally:
        upload.close()
    # The spooled upload had no name; only the workers' report folder is left.
    assert [p.name for p in temp.iterdir()] == left and len(left) == 1 and left[0].startswith(f"{PREFIX}page-reports-")

    restarted, _ = start_service(tmp_path, temp, log)
    try:
        now = [p.name for p in temp.iterdir()]
        assert len(now) == 1 and now[0] != left[0] and now[0].startswith(f"{PREFIX}page-reports-")
        assert f"removed 1 folder(s) a stopped OCR service left in {temp}" in log.read_text()
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(60)
    assert list(temp.iterdir()) == []
