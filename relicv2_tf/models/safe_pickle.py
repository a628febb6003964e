"""Reading the published Haiku checkpoint pickles without running their code.

A pickle is a program. `load_checkpoint` reads one with `RestrictedUnpickler`, which turns
Haiku's mapping classes into dicts and the numpy / dill / jax array helpers into numpy arrays,
maps the experiments' state records (BYOL's `_ByolExperimentState`, ReLICv2's
`_EvalExperimentState`) to named tuples, and refuses every other global; and it opens a file
only when the caller vouches for it (`require_trust`: `trust_pickle` or a matching sha256). Used
by `models/convert.py`; `models/torch_pickle.py` runs the same unpickler with PyTorch's globals.
"""

from __future__ import annotations

import collections
import hashlib
import io
import keyword
import os
import pickle
import re
from typing import Any

import numpy as np

# Field order of byol.byol_experiment._ByolExperimentState and relicv2's _EvalExperimentState.
KNOWN_RECORD_FIELDS = {
    "_ByolExperimentState": (
        "online_params", "target_params", "online_state", "target_state", "opt_state"),
    "_EvalExperimentState": (
        "backbone_params", "classif_params", "backbone_state", "backbone_opt_state",
        "classif_opt_state"),
}
class CheckpointError(ValueError):
    """A checkpoint file that cannot be converted; the message names the file and the fix."""


# ------------------------------------------------------------------------------------------------
# Restricted unpickling.


class PickledMapping(dict):
    """Stand-in for Haiku's FlatMapping / FlatMap / frozendict: a plain dict.

    Haiku pickles them as `(FlatMapping, (mapping,))`; NEWOBJ + BUILD forms are accepted too.
    """

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = state[1] or state[0]
        if isinstance(state, dict) and "_mapping" in state:
            state = state["_mapping"]
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"unexpected Haiku mapping state {type(state).__name__}")
        self.update(state)


class OpaqueRecord(tuple):
    """Stand-in for optimiser / experiment state named tuples whose fields we do not need."""

    record_name = "record"

    def __new__(cls, *values):
        return super().__new__(cls, values)

    def __setstate__(self, state):  # records carry no state we use
        del state


_created_classes: set = set()


def _namedtuple(name: str, fields, module: str = "pickled", defaults=None):
    """dill's `_create_namedtuple` without importing `module` (a pickle must not import code)."""
    names = [name, *fields]
    if not all(isinstance(n, str) and n.isidentifier() and not keyword.iskeyword(n)
               for n in names) or not isinstance(module, str):
        raise pickle.UnpicklingError(f"invalid named tuple {name!r} fields {fields!r}")
    cls = collections.namedtuple(name, fields, defaults=defaults)
    cls.__module__ = "relicv2_tf.models.convert.pickled"
    cls.source_module = module
    _created_classes.add(cls)
    return cls


def _record_class(module: str, name: str):
    if name in KNOWN_RECORD_FIELDS:
        return _namedtuple(name, KNOWN_RECORD_FIELDS[name], module)
    cls = type(name, (OpaqueRecord,), {"record_name": f"{module}.{name}"})
    _created_classes.add(cls)
    return cls


def _set_qualname(obj, attribute, value):
    """dill's post-processing `setattr(namedtuple_class, '__qualname__', name)`; nothing else."""
    if attribute != "__qualname__" or obj not in _created_classes or not isinstance(value, str):
        raise pickle.UnpicklingError(f"refusing setattr({obj!r}, {attribute!r}, ...)")
    obj.__qualname__ = value


def _array_from_reduce(function, args, state, extra=None):
    """dill's `_create_array` / jax's `_reconstruct_array`: numpy array from its reduce tuple."""
    if function not in _NUMPY_RECONSTRUCTORS:
        raise pickle.UnpicklingError(f"array reconstructor {function!r} is not numpy's")
    array = function(*args)
    array.__setstate__(state)
    del extra  # npdict (dill) or aval state (jax): nothing a numpy array needs
    return np.asarray(array)


def _bytes_from_str(text, encoding="latin1"):
    """`_codecs.encode(str, 'latin1')`: how protocol-2 pickles write `bytes`."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("unexpected _codecs.encode call")
    return text.encode(encoding)


def _dtype_class(scalar_type):
    """dill's `_create_dtypemeta`: the class of a numpy dtype."""
    if scalar_type is None:
        return np.dtype
    if not (isinstance(scalar_type, type) and issubclass(scalar_type, np.generic)):
        raise pickle.UnpicklingError(f"unexpected dtype scalar type {scalar_type!r}")
    return type(np.dtype(scalar_type))


_SAFE_TYPES = {
    t.__name__: t
    for t in (dict, list, tuple, set, frozenset, bytes, bytearray, str, int, float, complex, bool)
}
_SAFE_TYPES["NoneType"] = type(None)


def _load_type(name):
    """dill's `_load_type` for builtin container / scalar types only."""
    if name not in _SAFE_TYPES:
        raise pickle.UnpicklingError(f"refusing dill type {name!r}")
    return _SAFE_TYPES[name]


def _frombuffer(buffer, dtype, shape, order):
    """numpy's protocol-5 array reconstructor."""
    array = np.frombuffer(buffer, dtype=dtype)
    return array.reshape(shape, order=order) if shape else array


# The numpy functions themselves, taken from numpy's own reduce tuples (numpy 1 pickles name them
# `numpy.core.multiarray.*`, numpy 2 pickles `numpy._core.multiarray.*`: same functions).
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_SCALAR = np.float32(0).__reduce__()[0]
_NUMPY_GLOBALS = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
for _core in ("numpy.core", "numpy._core"):
    _NUMPY_GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = _RECONSTRUCT
    _NUMPY_GLOBALS[(f"{_core}.multiarray", "scalar")] = _SCALAR
    _NUMPY_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = _frombuffer
_NUMPY_RECONSTRUCTORS = (_RECONSTRUCT, _frombuffer)

_HAIKU_MAPPINGS = ("FlatMapping", "FlatMap", "frozendict", "_FlatMap")
SAFE_GLOBALS = {
    **_NUMPY_GLOBALS,
    **{(m, n): PickledMapping
       for m in ("haiku._src.data_structures", "haiku.data_structures") for n in _HAIKU_MAPPINGS},
    ("dill._dill", "_create_array"): _array_from_reduce,
    ("dill._dill", "_create_namedtuple"): _namedtuple,
    ("dill._dill", "_load_type"): _load_type,
    ("dill._dill", "_create_dtypemeta"): _dtype_class,
    ("jax._src.array", "_reconstruct_array"): _array_from_reduce,
    ("_codecs", "encode"): _bytes_from_str,
    ("builtins", "setattr"): _set_qualname,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("builtins", n): t for n, t in _SAFE_TYPES.items() if n != "NoneType"},
    **{("__builtin__", n): t for n, t in _SAFE_TYPES.items() if n != "NoneType"},
}
# Experiment and optimiser state named tuples, pickled by reference by plain pickle / new dill.
_RECORD_MODULES = re.compile(r"^(byol|relicv2|optax)(\.|$)")
_RECORD_NAMES = re.compile(r"^_?[A-Za-z0-9]*State$")


# (what the file is, what is read from it, what a false refusal would be): for error messages.
HAIKU_DESCRIPTION = ("a Haiku/JAX checkpoint", "numpy arrays, dicts and Haiku mappings",
                     "a published ReLICv2/BYOL checkpoint")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in `safe_globals` and persistent ids only through
    `persistent_load`. The defaults read a Haiku checkpoint (SAFE_GLOBALS and the experiments'
    state records; no persistent ids); models/torch_pickle.py passes PyTorch's storage records."""

    def __init__(self, file, path: str, safe_globals=None, persistent_load=None,
                 description=HAIKU_DESCRIPTION):
        super().__init__(file)
        self._path = path
        self._haiku = safe_globals is None
        self._safe_globals = SAFE_GLOBALS if safe_globals is None else safe_globals
        self._persistent_load = persistent_load
        self._description = description

    def find_class(self, module, name):
        if (module, name) in self._safe_globals:
            return self._safe_globals[(module, name)]
        if self._haiku and _RECORD_MODULES.match(module) and _RECORD_NAMES.match(name):
            return _record_class(module, name)
        kind, allowed, published = self._description
        raise CheckpointError(
            f"{self._path}: the pickle references `{module}.{name}`, which {kind} never needs; "
            "refusing to load it because unpickling it could run code. Only "
            f"{allowed} are read. If this file really is {published}, please report the "
            "class name.")

    def persistent_load(self, pid):
        if self._persistent_load is None:
            raise CheckpointError(
                f"{self._path}: persistent ids are not used by Haiku checkpoints.")
        return self._persistent_load(pid)


class _ProgressFile(io.RawIOBase):
    """File wrapper that advances a tqdm bar as the unpickler reads (checkpoints reach 4.6 GB)."""

    def __init__(self, raw, bar):
        self._raw, self._bar = raw, bar

    def readable(self):
        return True

    def readinto(self, buffer):
        count = self._raw.readinto(buffer)
        self._bar.update(count or 0)
        return count


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def require_trust(path: str, trust_pickle: bool = False,
                  expected_sha256: str | None = None) -> None:
    """Refuses `path` unless it exists and the caller vouches for it (see `load_checkpoint`)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file; pass the downloaded file.")
    if expected_sha256:
        actual = file_sha256(path)
        if actual.lower() != expected_sha256.lower():
            raise CheckpointError(
                f"{path}: sha256 {actual} does not match the expected {expected_sha256}; the file "
                "is corrupt or not the one you meant. Re-download it.")
    elif not trust_pickle:
        raise CheckpointError(
            f"{path}: refusing to unpickle a file that is not known to be safe (pickles can run "
            "code). Pass --trust_pickle if you downloaded it yourself from the authors' link, or "
            "--expected_sha256 with a checksum from a trusted source.")


# How `torch.save` files start: a zip archive (torch >= 1.6), or the legacy format's magic number
# pickled with protocol 2 (PROTO 2, LONG1 of 10 bytes).
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_LEGACY_HEADER = b"\x80\x02\x8a\x0a" + TORCH_LEGACY_MAGIC.to_bytes(10, "little")
_ZIP_HEADER = b"PK\x03\x04"


def torch_file_format(path: str) -> str | None:
    """"zip" or "legacy" for a `torch.save` file, None for anything else."""
    with open(path, "rb") as f:
        head = f.read(len(_TORCH_LEGACY_HEADER))
    if head.startswith(_ZIP_HEADER):
        return "zip"
    if head == _TORCH_LEGACY_HEADER:
        return "legacy"
    return None


def load_checkpoint(path: str, *, trust_pickle: bool = False, expected_sha256: str | None = None,
                    progress: bool = False) -> Any:
    """Reads a Haiku checkpoint pickle with the restricted unpickler.

    A pickle is a program: opening one from an untrusted source can run code. The restricted
    unpickler refuses every global outside SAFE_GLOBALS, but it is not a sandbox (a crafted file
    can still exhaust memory), so the file must be trusted explicitly: either `trust_pickle=True`
    (you downloaded it yourself from the authors' link) or `expected_sha256` equal to a checksum
    obtained from a trusted source (the path is then "known safe").
    """
    require_trust(path, trust_pickle, expected_sha256)
    if torch_file_format(path):
        raise CheckpointError(
            f"{path}: this is a PyTorch `torch.save` file, not a Haiku pickle; for the SwAV "
            "checkpoints pass --format=swav.")
    size = os.path.getsize(path)
    try:
        with open(path, "rb", buffering=0) as raw:
            if progress:
                from tqdm import tqdm

                with tqdm(total=size, unit="B", unit_scale=True, desc="reading checkpoint") as bar:
                    return RestrictedUnpickler(
                        io.BufferedReader(_ProgressFile(raw, bar), 1 << 22), path).load()
            return RestrictedUnpickler(io.BufferedReader(raw, 1 << 22), path).load()
    except CheckpointError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError,
            AttributeError) as e:
        raise CheckpointError(
            f"{path}: not a readable checkpoint pickle ({type(e).__name__}: {e}); the file is "
            f"probably truncated ({size} bytes) or not a Haiku checkpoint. Re-download it.") from e
