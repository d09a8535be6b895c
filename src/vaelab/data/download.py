"""Download one file from a list of mirrors: streamed, verified, then renamed into place.

Nothing half-downloaded or unverified ever sits at the destination: bytes go to a
temporary file beside it, are hashed on the way, and are renamed over the destination
only once every check passed. The network is reached only through ``opener``, so tests
can pass a fake one (or point the real one at a server on 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .cache import atomic_path
from .errors import DataError

Opener = Callable[[str, float], Any]
"""``opener(url, timeout)`` -> a context manager with ``read(n)`` and ``headers``."""

CHUNK = 1 << 20


def downloads_disabled() -> bool:
    """True when ``$VAELAB_NO_DOWNLOAD`` is set (to anything but "" or "0"): offline runs
    and test suites set it so nothing reaches the network by default."""
    return os.environ.get("VAELAB_NO_DOWNLOAD", "") not in ("", "0")


def refuse_if_disabled(what: str) -> None:
    """Raise DataError when downloads are disabled."""
    if downloads_disabled():
        raise DataError(f"not downloading {what}: downloads are disabled by "
                        f"VAELAB_NO_DOWNLOAD; unset it, or put the files in place by hand")


def urllib_opener(url: str, timeout: float) -> Any:
    """The default opener: a plain HTTP(S) GET with urllib."""
    request = urllib.request.Request(url, headers={"User-Agent": "vaelab-data"})
    return urllib.request.urlopen(request, timeout=timeout)


class _NoBar:
    def update(self, n: int) -> None:
        pass


def _progress_bar(total: int | None, label: str, enabled: bool) -> Any:
    """A tqdm byte counter on stderr, or a do-nothing stand-in when disabled/unavailable."""
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            return tqdm(total=total, desc=label, unit="B", unit_scale=True,
                        unit_divisor=1024, file=sys.stderr, leave=False)
    return contextlib.nullcontext(_NoBar())


def _content_length(response: Any) -> int | None:
    headers = getattr(response, "headers", None) or {}
    value = headers.get("Content-Length")
    return int(value) if value is not None and str(value).isdigit() else None


def download_one(url: str, dest: Path, *, sha256: str | None = None, md5: str | None = None,
                 check: Callable[[Path], None] | None = None, opener: Opener | None = None,
                 progress: bool = True, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` if its digests match (and ``check(tmp)`` passes).

    Raises DataError naming the URL on a network error, a short read or a digest
    mismatch; ``dest`` is then left exactly as it was.
    """
    if opener is None:
        refuse_if_disabled(url)
        opener = urllib_opener
    hashers = {"sha256": hashlib.sha256(), "md5": hashlib.md5(usedforsecurity=False)}
    expected = {"sha256": sha256, "md5": md5}
    try:
        with atomic_path(dest) as tmp:
            with open(tmp, "wb") as out, opener(url, timeout) as response:
                total = _content_length(response)
                received = 0
                with _progress_bar(total, dest.name, progress) as bar:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        for h in hashers.values():
                            h.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
            if total is not None and received != total:
                raise DataError(f"download of {url} stopped after {received} of {total} bytes; "
                                f"run the fetch again")
            for algo, want in expected.items():
                got = hashers[algo].hexdigest()
                if want is not None and got != want:
                    raise DataError(f"{dest.name} from {url} failed its checksum ({algo} {got}, "
                                    f"expected {want}); it was discarded, try again later")
            if check is not None:
                try:
                    check(tmp)
                except DataError as exc:
                    raise DataError(f"{dest.name} from {url}: {exc}; it was discarded, try "
                                    f"again later") from None
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the open response
        raise DataError(f"could not download {url} (HTTP {exc.code} {exc.reason}); try "
                        f"another mirror or try again later") from None
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
        raise DataError(f"could not download {url} ({type(exc).__name__}: {exc}); check the "
                        f"network or try again later") from None
    return dest


def download(urls: Sequence[str], dest: Path, **kwargs: Any) -> Path:
    """Try each mirror in turn with :func:`download_one`; DataError lists every failure."""
    failures = []
    for url in urls:
        try:
            return download_one(url, dest, **kwargs)
        except DataError as exc:
            failures.append(str(exc))
    raise DataError(f"could not download {dest.name} from any mirror: " + " | ".join(failures))
