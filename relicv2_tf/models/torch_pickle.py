"""Reading `torch.save` files of tensors (state dicts) without PyTorch and without running code.

PyTorch writes two formats (torch/serialization.py); `load_torch_file` reads both:

* zip (the default since torch 1.6, `_save` / `_load`): a zip archive (entries stored, not
  compressed) with `<root>/data.pkl`, the main pickle; `<root>/data/<key>`, the raw bytes of each
  storage; and `<root>/byteorder` ("little" or "big"; absent in files older than torch 1.12,
  which are little-endian). `<root>` is "archive" or the file's base name.
* legacy (`_legacy_save` / `_legacy_load`; the default before torch 1.6, e.g. the SwAV files of
  2020, and `_use_new_zipfile_serialization=False` since): one stream holding, in order, a pickle
  of the magic number 0x1950a86a20f9469cfc6c, a pickle of the protocol version (1001), a pickle of
  `sys_info` ({protocol_version, little_endian, type_sizes}), the main pickle, a pickle of the
  sorted list of storage keys, then for each key in that order the storage: its element count as
  a little-endian int64 and its raw little-endian bytes.

In both, the main pickle (protocol 2) reduces each tensor to
`torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
backward_hooks[, metadata])` with `backward_hooks` an empty `collections.OrderedDict`, and names
each storage by a persistent id `('storage', torch.<Type>Storage, key, location, numel)` (the
legacy format adds a sixth field, `view_metadata`, None unless the storage is a view, which
torch >= 0.4 never writes). `location` ('cpu', 'cuda:0') is ignored: everything becomes numpy.

The unpickler is `safe_pickle.RestrictedUnpickler` with only those globals: the storage classes
become dtype markers, `_rebuild_tensor_v2` records (storage, offset, size, stride), and every
other global stops the load with an error naming it. Tensors are materialised after the storages
are read, with bounds checked, as numpy arrays.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pickle
import re
import struct
import zipfile
from typing import Any

import numpy as np

from relicv2_tf.models.safe_pickle import (
    TORCH_LEGACY_MAGIC,
    CheckpointError,
    RestrictedUnpickler,
    require_trust,
    torch_file_format,
)

LEGACY_PROTOCOL_VERSION = 1001
# torch.<name>Storage -> dtype of its elements (little-endian; the zip format may say otherwise).
STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?",
}
TORCH_DESCRIPTION = ("a PyTorch state dict", "tensors, their storages and dicts",
                     "a published SwAV checkpoint")
_STORAGE_KEY = re.compile(r"^[0-9A-Za-z_]+$")


@dataclasses.dataclass(frozen=True)
class StorageType:
    """What `torch.FloatStorage` etc. unpickle to: a marker carrying the element dtype."""

    name: str
    dtype: np.dtype


@dataclasses.dataclass
class StorageRef:
    key: str
    dtype: np.dtype
    numel: int


@dataclasses.dataclass
class TensorRecord:
    """A tensor before its storage is read: `_rebuild_tensor_v2`'s arguments."""

    storage: StorageRef
    offset: int
    size: tuple
    stride: tuple


def _int_tuple(value, what):
    if not isinstance(value, tuple) or not all(isinstance(v, int) and v >= 0 for v in value):
        raise pickle.UnpicklingError(f"tensor {what} {value!r} is not a tuple of integers >= 0")
    return value


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False,
                    backward_hooks=None, metadata=None):
    """`torch._utils._rebuild_tensor_v2`, recorded; the hooks and metadata are not needed."""
    del requires_grad, backward_hooks, metadata
    if not isinstance(storage, StorageRef):
        raise pickle.UnpicklingError("tensor without a storage persistent id")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise pickle.UnpicklingError(f"tensor storage offset {storage_offset!r}")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"tensor size {size} and stride {stride} differ in rank")
    return TensorRecord(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """`torch._utils._rebuild_parameter` (an `nn.Parameter`): its tensor."""
    del requires_grad, backward_hooks
    if not isinstance(data, TensorRecord):
        raise pickle.UnpicklingError("parameter without a tensor")
    return data


def _storage_types():
    types = {name: np.dtype(dtype) for name, dtype in STORAGE_DTYPES.items()}
    try:  # bfloat16 storages: numpy has no bfloat16, ml_dtypes (a TensorFlow dependency) has
        import ml_dtypes

        types["BFloat16Storage"] = np.dtype(ml_dtypes.bfloat16)
    except ImportError:
        pass
    return {("torch", name): StorageType(name, dtype) for name, dtype in types.items()}


TORCH_SAFE_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **_storage_types(),
}


class _Storages:
    """The persistent ids of one main pickle: key -> StorageRef."""

    def __init__(self, path):
        self._path = path
        self.refs: dict[str, StorageRef] = {}

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            kind = pid[0] if isinstance(pid, tuple) and pid else type(pid).__name__
            raise CheckpointError(
                f"{self._path}: persistent id of kind {kind!r}; a state dict of tensors only has "
                "('storage', ...) ids (a pickled nn.Module is not supported: save its "
                "state_dict()).")
        _, storage_type, key, _location, numel = pid[:5]
        if len(pid) == 6 and pid[5] is not None:
            raise CheckpointError(f"{self._path}: storage {key!r} is a view of another storage "
                                  "(torch < 0.4 files); not supported.")
        if not isinstance(storage_type, StorageType):
            raise CheckpointError(f"{self._path}: storage {key!r} has no torch storage type.")
        if not (isinstance(key, str) and _STORAGE_KEY.match(key)) or not (
                isinstance(numel, int) and numel >= 0):
            raise CheckpointError(f"{self._path}: malformed storage id {pid[:5]!r}.")
        ref = self.refs.setdefault(key, StorageRef(key, storage_type.dtype, numel))
        if (ref.dtype, ref.numel) != (storage_type.dtype, numel):
            raise CheckpointError(f"{self._path}: storage {key!r} is declared twice differently.")
        return ref


def _unpickler(file, path, storages=None):
    """The restricted unpickler: torch's globals for the main pickle, none for the rest."""
    if storages is None:
        return RestrictedUnpickler(file, path, safe_globals={}, description=TORCH_DESCRIPTION)
    return RestrictedUnpickler(file, path, safe_globals=TORCH_SAFE_GLOBALS,
                               persistent_load=storages.persistent_load,
                               description=TORCH_DESCRIPTION)


def _storage_array(ref: StorageRef, data: bytes, big_endian: bool, path: str) -> np.ndarray:
    dtype = ref.dtype.newbyteorder(">") if big_endian and ref.dtype.itemsize > 1 else ref.dtype
    if len(data) != ref.numel * dtype.itemsize:
        raise CheckpointError(f"{path}: storage {ref.key!r} holds {len(data)} bytes, its header "
                              f"says {ref.numel} x {dtype.itemsize}; the file is truncated or "
                              "corrupt. Re-download it.")
    return np.frombuffer(data, dtype=dtype)


def _load_zip(path: str):
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: a zip file without exactly one `<root>/data.pkl` "
                                  f"(found {pickles}); not a torch.save file.")
        root = pickles[0][: -len("data.pkl")]
        storages = _Storages(path)
        with archive.open(pickles[0]) as f:
            tree = _unpickler(f, path, storages).load()
        names = set(archive.namelist())
        big_endian = (root + "byteorder" in names
                      and archive.read(root + "byteorder").strip() == b"big")
        arrays = {}
        for key, ref in storages.refs.items():
            name = root + "data/" + key
            if name not in names:
                raise CheckpointError(f"{path}: storage `{name}` is missing.")
            if archive.getinfo(name).file_size != ref.numel * ref.dtype.itemsize:  # before reading
                raise CheckpointError(f"{path}: storage `{name}` is not {ref.numel} elements of "
                                      f"{ref.dtype.itemsize} bytes; the file is corrupt.")
            arrays[key] = _storage_array(ref, archive.read(name), big_endian, path)
    return tree, arrays


def _load_legacy(path: str):
    with open(path, "rb") as f:
        magic = _unpickler(f, path).load()
        version = _unpickler(f, path).load()
        sys_info = _unpickler(f, path).load()
        if magic != TORCH_LEGACY_MAGIC or version != LEGACY_PROTOCOL_VERSION:
            raise CheckpointError(f"{path}: legacy torch file with protocol {version!r}; only "
                                  f"{LEGACY_PROTOCOL_VERSION} (torch 0.4 - 1.5) is known.")
        if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
            raise CheckpointError(f"{path}: legacy torch file written on a big-endian machine "
                                  "(or without sys_info); not supported.")
        storages = _Storages(path)
        tree = _unpickler(f, path, storages).load()
        keys = _unpickler(f, path).load()
        if not isinstance(keys, list) or set(keys) != set(storages.refs):
            raise CheckpointError(f"{path}: the storage key list does not match the tensors' "
                                  "storages; the file is corrupt.")
        file_size = os.fstat(f.fileno()).st_size
        arrays = {}
        for key in keys:
            ref = storages.refs[key]
            (numel,) = struct.unpack("<q", f.read(8))
            if numel != ref.numel or f.tell() + numel * ref.dtype.itemsize > file_size:
                raise CheckpointError(
                    f"{path}: storage {key!r} of {ref.numel} elements has a header of {numel} "
                    "or runs past the end of the file; the file is truncated or corrupt.")
            arrays[key] = _storage_array(ref, f.read(numel * ref.dtype.itemsize), False, path)
    return tree, arrays


def _materialise(record: TensorRecord, arrays: dict, path: str) -> np.ndarray:
    storage = arrays[record.storage.key]
    if 0 in record.size:
        return np.zeros(record.size, storage.dtype.newbyteorder("="))
    last = record.offset + sum((n - 1) * s for n, s in zip(record.size, record.stride))
    if last >= storage.size:
        raise CheckpointError(f"{path}: a tensor of size {record.size} at offset {record.offset} "
                              f"runs past its storage of {storage.size} elements.")
    view = np.lib.stride_tricks.as_strided(
        storage[record.offset:], shape=record.size,
        strides=[s * storage.itemsize for s in record.stride], writeable=False)
    return np.array(view, dtype=storage.dtype.newbyteorder("="))  # a C-ordered copy


def _resolve(tree, arrays, path):
    if isinstance(tree, TensorRecord):
        return _materialise(tree, arrays, path)
    if isinstance(tree, dict):
        return type(tree)((k, _resolve(v, arrays, path)) for k, v in tree.items())
    if isinstance(tree, (list, tuple)):
        return type(tree)(_resolve(v, arrays, path) for v in tree)
    return tree


def load_torch_file(path: str, *, trust_pickle: bool = False,
                    expected_sha256: str | None = None) -> Any:
    """Reads a `torch.save` file (zip or legacy) -> its object with tensors as numpy arrays.

    Like `safe_pickle.load_checkpoint`, the file is opened only with `trust_pickle` or a matching
    `expected_sha256`, and always through the restricted unpickler.
    """
    require_trust(path, trust_pickle, expected_sha256)
    file_format = torch_file_format(path)
    if file_format is None:
        raise CheckpointError(
            f"{path}: not a PyTorch `torch.save` file (neither a zip archive nor the legacy "
            "format's magic number). A Haiku pickle (ReLICv2 / BYOL) is read with "
            "--format=haiku; files of torch < 0.4 (tar archives) are not supported.")
    try:
        tree, arrays = _load_zip(path) if file_format == "zip" else _load_legacy(path)
        return _resolve(tree, arrays, path)
    except CheckpointError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, struct.error, zipfile.BadZipFile) as e:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e}); the file is "
            "probably truncated or corrupt. Re-download it.") from e
