"""Starting the services as the unprivileged users their images run them as.

No Docker engine runs on the build machines; the tests that reproduce a container start its
command as the image's user instead. As root that is the image's uid (``USER`` numeric, or the
``useradd --uid N NAME`` that made ``USER NAME``; ``nobody`` where the image names none) through
``setpriv``; as any other user the command runs as that user, who is unprivileged already.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.dockerfile import Image

NOBODY = 65534


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int

    @property
    def prefix(self) -> list[str]:
        """The command prefix that runs a command as this account ([] when the tests are not root)."""
        if os.geteuid() != 0:
            return []
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.fail("setpriv (util-linux) is needed to run a service as an unprivileged user; install util-linux")
        return [setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]

    def owns(self, path: Path) -> Path:
        """``path`` (a folder, made if missing) owned by this account, as a named volume is by its mount point's."""
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(path, self.uid, self.gid)
        return path


def nobody() -> Account:
    if os.geteuid() != 0:
        return Account(os.geteuid(), os.getegid())
    return Account(NOBODY, NOBODY)


def image_account(image: Image) -> Account:
    """The account the image's ``USER`` runs as (the current user when the tests are not root)."""
    if os.geteuid() != 0:
        return Account(os.geteuid(), os.getegid())
    user, _, group = (image.user or "").partition(":")
    if user.isdigit():
        return Account(int(user), int(group) if group.isdigit() else int(user))
    for run in image.runs:
        made = re.search(r"useradd\b[^&;|]*?--uid[ =](\d+)[^&;|]*?\b" + re.escape(user) + r"\b", run)
        if user and made:
            return Account(int(made[1]), int(made[1]))
    assert user not in ("", "root", "0"), "the image runs as root"
    pytest.fail(f"the uid of the image's USER {user!r} is not in its Dockerfile (useradd --uid N {user})")


def interpreter(prefix: list[str], folder: Path) -> str:
    """A Python with this venv's packages that the user can run, and start workers from.

    The venv's own interpreter may link into a folder the user cannot enter (pyenv under a
    private /root): then a venv is made over a system Python of the same version, with this
    venv's site-packages added, as the image has its packages in its interpreter's.
    """
    starts_children = "import subprocess, sys; subprocess.run([sys.executable, '-c', ''], check=True)"

    def usable(python: str) -> bool:
        return subprocess.run([*prefix, python, "-c", starts_children], capture_output=True, timeout=60).returncode == 0

    if usable(sys.executable):
        return sys.executable
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    base = shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")
    if base is None:
        pytest.fail(f"the user cannot run {sys.executable}, and there is no system {version} to use instead")
    venv = folder / "venv"
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site_dirs = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    (venv / "lib" / version / "site-packages" / "shared-venv.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in site_dirs) + "\n"
    )
    python = str(venv / "bin" / "python")
    if not usable(python):
        pytest.fail(f"the user can run neither {sys.executable} nor {base} with this venv's packages")
    return python
