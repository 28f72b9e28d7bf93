"""Readers of the dataset formats: IDX (MNIST, Fashion-MNIST), the CIFAR-10 python archive, and the
in-memory `Dataset` every loader returns (uint8 NHWC images, int64 labels)."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainlab.errors import DataError


@dataclass
class Dataset:
    """A dataset in memory: uint8 images (N, H, W, C) and int64 labels (N,)."""

    name: str
    classes: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str = ""
    info: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the loader decided that the user should hear
    files: dict[str, list[str]] = field(default_factory=dict)  # image trees: each split's files, in order (relative paths)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# ---------------------------------------------------------------------------------------------
# IDX
# ---------------------------------------------------------------------------------------------

def read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, gunzipped if it is a .gz; a truncated or corrupt gzip is a DataError."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise DataError(f"{path}: cannot read it ({exc.strerror}); check the path and its permissions") from None
        raise DataError(f"{path}: truncated or not a valid gzip file ({exc}); delete it and fetch it again "
                        f"(`trainlab datasets fetch`)") from None


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, path: Path | str, expect_ndim: int) -> np.ndarray:
    """Decode IDX bytes (LeCun's format): 2 zero bytes, a dtype code, ndim, then big-endian dims."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
        raise DataError(f"{path}: wrong magic number {magic!r} for an IDX file (expected 0x{0x800 + expect_ndim:08x}); "
                        f"the file is not MNIST-format data: replace it with the original")
    ndim = data[3]
    if ndim != expect_ndim:
        raise DataError(f"{path}: wrong magic number 0x{int.from_bytes(data[:4], 'big'):08x}: an IDX file of {ndim} "
                        f"dimensions where {expect_ndim} were expected; are images and labels swapped?")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    offset = 4 + 4 * ndim
    expected = offset + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{path}: truncated or padded IDX file ({len(data)} bytes, header says {expected}); "
                        f"delete it and fetch it again")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(dims).astype(np.uint8 if data[2] == 0x08 else dtype)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 python archive
# ---------------------------------------------------------------------------------------------

class _SafeUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts of bytes, lists and numpy arrays) and refuses anything else."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def read_cifar10_archive(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the canonical `cifar-10-python.tar.gz`: five training batches and one test batch."""
    def load(tar: tarfile.TarFile, member: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            fh = tar.extractfile(f"cifar-10-batches-py/{member}")
        except KeyError:
            raise DataError(f"{path}: no cifar-10-batches-py/{member} inside; this is not the CIFAR-10 python archive") from None
        try:
            batch = _SafeUnpickler(io.BytesIO(fh.read()), encoding="bytes").load()
            data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            labels = np.asarray(batch[b"labels"], dtype=np.int64)
        except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as exc:
            raise DataError(f"{path}: batch {member} is corrupt ({exc}); delete the archive and fetch it again") from None
        return np.ascontiguousarray(data), labels

    try:
        with tarfile.open(path, "r:gz") as tar:
            parts = [load(tar, f"data_batch_{i}") for i in range(1, 6)]
            x_test, y_test = load(tar, "test_batch")
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise DataError(f"{path}: truncated or not a valid tar.gz archive ({exc}); delete it and fetch it again") from None
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return x_train, y_train, x_test, y_test
