"""Where downloaded data lives, and how files get there without ever being half-written."""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path


def cache_dir() -> Path:
    """The data cache: ``$VAELAB_DATA``, else the platform cache dir + ``vaelab``.

    On Linux that is ``$XDG_CACHE_HOME/vaelab`` or ``~/.cache/vaelab``; on macOS
    ``~/Library/Caches/vaelab``; on Windows ``%LOCALAPPDATA%/vaelab/Cache``.
    """
    env = os.environ.get("VAELAB_DATA")
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        return (Path(local) if local else home / "AppData" / "Local") / "vaelab" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "vaelab"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".cache"
    return base / "vaelab"


@contextlib.contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only on success.

    Readers see either the old file or the complete new one, never a partial write;
    on any error the temporary file is removed and ``dest`` is untouched.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name rather than mkstemp, so the file gets the usual umask mode, not 0600.
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.part")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
