"""A folder of PNG/JPEG images as one dataset: ``data.name = "path/to/folder"``.

The folder is searched recursively (hidden files and folders skipped; files other than
``.png``/``.jpg``/``.jpeg`` ignored). Images directly in subfolders of the top folder get
that subfolder's label: class names sorted, numbered 0, 1, ...; the name -> label map is
recorded in ``ArrayDataset.info["classes"]``. Images all at the top level have no labels;
a folder mixing both is refused.

Every image becomes uint8 (C, N, N) (``data.image_size`` > 0; ``data.image_fit``:
"resize" stretches to N x N, "center-crop" scales the short side to N and cuts the
centre), or keeps its size when ``data.image_size`` is 0 (then all must share one).
Channels: ``data.image_channels`` "auto" keeps the files' own (gray -> 1, colour -> 3;
alpha dropped; all files must agree), "gray"/"rgb" convert every file. The stack is
stored 8-bit (``is_8bit``) and cut by the seeded split (``seeded``).

Two passes: headers first (sizes and modes, no pixels decoded), so mixed sizes or channel
counts fail before any decoding; then each image is decoded into a preallocated array.
Every problem is a one-line :class:`DataError` naming the file and the fix.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vaelab.config import DataConfig

from .dataset import ArrayDataset
from .errors import DataError
from .seeded import seeded_dataset

SUFFIXES = (".png", ".jpg", ".jpeg")
GRAY_MODES = ("1", "L", "LA", "La")  # 8-bit (or 1-bit) gray, with or without alpha
DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # 16- and 32-bit: not 8-bit data


@dataclass(frozen=True)
class ImageFile:
    """One image's header: where it is, its class (or None), size and Pillow mode."""

    path: Path
    label: str | None
    size: tuple[int, int]  # (width, height), as Pillow reports it
    mode: str

    @property
    def channels(self) -> int:
        """1 for gray files, 3 for colour, as vaelab stores them with image_channels=auto."""
        return 1 if self.mode in GRAY_MODES else 3


def is_image_folder(name: str) -> bool:
    """A directory given as data.name (not a directory of CIFAR-10 batches: checked first)."""
    return Path(name).expanduser().is_dir()


def _bad_image(path: Path, err: BaseException) -> DataError:
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return DataError(f"{path}: not a readable PNG/JPEG image ({reason}); replace or delete "
                     f"the file")


def image_files(root: Path) -> list[Path]:
    """The image files under ``root``, sorted by their path inside it (the row order)."""
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix.lower() in SUFFIXES and path.is_file():
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def scan(root: str | Path) -> list[ImageFile]:
    """Every image's header (no pixels decoded), with its class; DataError for a folder
    with no images, an unreadable file, or images both at the top and in subfolders."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root).expanduser()
    paths = image_files(root)
    if not paths:
        raise DataError(f"{root} holds no PNG or JPEG images (searched its subfolders too); "
                        f"put .png/.jpg files in it, one subfolder per class for labels")
    top = [p for p in paths if p.parent == root]
    if top and len(top) < len(paths):
        nested = next(p for p in paths if p.parent != root)
        raise DataError(f"{root} has images both at its top level ({top[0].name}) and in "
                        f"subfolders ({nested.relative_to(root)}); put every image in a class "
                        f"subfolder, or all at the top level for no labels")
    out = []
    for path in paths:
        rel = path.relative_to(root)
        try:
            with Image.open(path) as im:
                size, mode = im.size, im.mode
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
                Image.DecompressionBombError) as err:
            raise _bad_image(path, err) from None
        out.append(ImageFile(path, rel.parts[0] if len(rel.parts) > 1 else None, size, mode))
    return out


def plan_shape(files: list[ImageFile], root: Path, size: int, channels_option: str
               ) -> tuple[int, int, int]:
    """(channels, height, width) every image is stored as, given data.image_size and
    data.image_channels; DataError for 16-bit files, mixed channel counts (auto) or mixed
    sizes (size 0)."""
    for f in files:
        if f.mode in DEEP_MODES:
            raise DataError(f"{f.path} is a {f.mode} image (16 or 32 bits per pixel); vaelab "
                            f"reads 8-bit images: save it as an 8-bit PNG or JPEG")
    if channels_option == "auto":
        by = {c: next(f for f in files if f.channels == c) for c in sorted({f.channels
                                                                          for f in files})}
        if len(by) > 1:
            raise DataError(f"{root}: images differ in channels: {by[1].path} is gray (mode "
                            f"{by[1].mode}), {by[3].path} is colour (mode {by[3].mode}); set "
                            f"data.image_channels to gray or rgb to convert them all")
        channels = next(iter(by))
    else:
        channels = 1 if channels_option == "gray" else 3
    if size:
        return channels, size, size
    first = files[0]
    other = next((f for f in files if f.size != first.size), None)
    if other is not None:
        raise DataError(f"{root}: images differ in size: {first.path} is "
                        f"{first.size[0]}x{first.size[1]}, {other.path} is "
                        f"{other.size[0]}x{other.size[1]} (width x height); set "
                        f"data.image_size=N to make them all N x N (data.image_fit: resize "
                        f"or center-crop)")
    return channels, first.size[1], first.size[0]


def fit_image(im: Any, size: int, how: str) -> Any:
    """A Pillow image made ``size`` x ``size``: stretched ("resize") or its short side
    scaled to ``size`` and the centre cut out ("center-crop"); untouched if already so."""
    from PIL import Image

    w, h = im.size
    if (w, h) == (size, size):
        return im
    if how == "resize":
        return im.resize((size, size), Image.Resampling.BILINEAR)
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def decode(files: list[ImageFile], shape: tuple[int, int, int], size: int, fit: str
           ) -> np.ndarray:
    """The images as one uint8 array (N, C, H, W) of ``shape`` = (C, H, W), each made
    ``size`` x ``size`` by ``fit`` when ``size`` > 0."""
    from PIL import Image

    channels, height, width = shape
    out = np.empty((len(files), *shape), dtype=np.uint8)
    target = "L" if channels == 1 else "RGB"
    for i, f in enumerate(files):
        try:
            with Image.open(f.path) as im:
                im.load()
                pixels = im.convert(target)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise _bad_image(f.path, err) from None  # truncated or corrupt pixel data
        if size:
            pixels = fit_image(pixels, size, fit)
        array = np.asarray(pixels, dtype=np.uint8)  # (H, W) or (H, W, 3)
        out[i] = array[None] if channels == 1 else array.transpose(2, 0, 1)
    assert out.shape[2:] == (height, width)
    return out


def _signature(root: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and modification times of the folder's images: a changed file loads anew."""
    return tuple((p.as_posix(), (st := p.stat()).st_size, st.st_mtime_ns)
                 for p in image_files(root))


# a run loads several splits of one folder: decode it once (the last folder is kept)
@functools.lru_cache(maxsize=1)
def _load(root: Path, signature: tuple[tuple[str, int, int], ...], size: int, fit: str,
          channels_option: str) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    files = scan(root)
    shape = plan_shape(files, root, size, channels_option)
    x = decode(files, shape, size, fit)
    classes = sorted({f.label for f in files if f.label is not None})
    index = {name: i for i, name in enumerate(classes)}
    y = np.array([index[f.label] for f in files if f.label is not None], dtype=np.int64) \
        if classes else None
    info: dict[str, Any] = {"kind": "image-folder", "dtype": "uint8", "files": len(files),
                            "image_size": [shape[1], shape[2]],
                            "image_fit": fit if size else "as stored",
                            "channels": shape[0]}
    if classes:
        info["classes"] = index
    x.setflags(write=False)  # kept by the cache: datasets made from it copy, never share it
    return x, y, info


def load_image_folder(root: str | Path, split: str, options: DataConfig | None = None
                      ) -> ArrayDataset:
    """One split of an image folder (see the module docstring); ``options``: image size,
    fit and channels, and the seeded split's shares and seed (default: DataConfig's)."""
    options = options or DataConfig()
    path = Path(root).expanduser()
    x, y, info = _load(path, _signature(path), options.image_size, options.image_fit,
                       options.image_channels)
    return seeded_dataset(x, y, split, options, name=str(root), source=f"{root} (image folder)",
                          info=dict(info))
