"""The edge's own secret, kept in the state directory so a restart does not change it.

Used when neither `[edge] rr_secret` nor `auth_secret` is set: the Record-Route
signatures (`rr_signing.py`) of dialogs set up before a restart must still verify after it.
"""

from __future__ import annotations

import os
from pathlib import Path


def state_secret(directory: Path | None = None) -> bytes:
    """The key in `$XDG_STATE_HOME/sipmesh/edge-rr.key`, created once (mode 0600)."""
    if directory is None:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        directory = base / "sipmesh"
    path = directory / "edge-rr.key"
    try:
        data = path.read_bytes().strip()
        if len(data) >= 32:
            return data
    except OSError:
        pass
    directory.mkdir(parents=True, exist_ok=True)
    secret = os.urandom(32).hex().encode()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, secret)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # first writer wins: workers starting together agree
    except FileExistsError:
        if len(path.read_bytes().strip()) < 32:
            os.replace(tmp, path)  # a damaged key file: replace it
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes().strip()
