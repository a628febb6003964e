"""Import the published ReLICv2 / BYOL Haiku checkpoints into our Keras ResNet.

The authors of ReLICv2 (google-deepmind/relicv2, README "ReLICv2 Checkpoints") and of BYOL
(deepmind-research/byol) released their pretrained encoders as `dill` pickles of

    {"experiment_state": <online_params, online_state, target_*, opt_state...>, "step", "rng"}

where `online_params` / `online_state` map Haiku module paths (`res_net50/~/block_group_0/~/
block_0/~/conv_0`) to `{param name: array}`. ReLICv2's state is a dict and keeps a leading replica
axis on every array (its evaluation code reads it with `get_first`); BYOL's state is the
`_ByolExperimentState` named tuple. Neither Haiku nor JAX is needed to read them: the restricted
unpickler below turns Haiku's mapping classes into dicts and the numpy / dill / jax array helpers
into numpy arrays, and refuses every other global (a pickle can run arbitrary code).

The torso is Haiku's ResNet v1 (`hk.nets.ResNet.BlockGroup`), which `models/resnet.py` reproduces
layer for layer with the Haiku module paths as layer names ("/~/" -> "__"):
  conv `w` [kh, kw, in, out]              -> Conv2D kernel (same layout)
  batch norm `scale` / `offset` [1,1,1,C] -> gamma / beta
  state `mean_ema/average`, `var_ema/average` -> moving_mean / moving_variance
(`hk.ExponentialMovingAverage` also stores `hidden`, the biased average, and `counter`; inference
uses only `average`, so those two are read, checked and dropped.)
Every encoder tensor is assigned exactly once; anything left over, missing or mis-shaped stops the
conversion with one error that names the tensors. Modules outside the encoder (projector,
predictor, online classifier, Haiku's `logits`) are listed in the report and skipped.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import keyword
import os
import pickle
import re
from typing import Any

import keras
import numpy as np

from relicv2_tf.models import encoder_io
from relicv2_tf.models import resnet as resnet_lib

HAIKU_SEPARATOR = "/~/"
BN_MOMENTUM = 0.9  # Haiku ResNet decay_rate in BYOL / ReLICv2
BN_EPSILON = 1e-5  # Haiku BatchNorm eps
STATE_KEYS = ("online_state", "backbone_state")
PARAM_KEYS = ("online_params", "backbone_params")
# Field order of byol.byol_experiment._ByolExperimentState and relicv2's _EvalExperimentState.
KNOWN_RECORD_FIELDS = {
    "_ByolExperimentState": (
        "online_params", "target_params", "online_state", "target_state", "opt_state"),
    "_EvalExperimentState": (
        "backbone_params", "classif_params", "backbone_state", "backbone_opt_state",
        "classif_opt_state"),
}
IGNORED_ENCODER_MODULES = ("logits",)  # hk.nets.ResNet's classifier: not part of the encoder
EMA_EXTRA_KEYS = ("hidden", "counter")  # biased average and step count; inference uses `average`


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


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a Haiku checkpoint needs (see SAFE_GLOBALS)."""

    def __init__(self, file, path: str):
        super().__init__(file)
        self._path = path

    def find_class(self, module, name):
        if (module, name) in SAFE_GLOBALS:
            return SAFE_GLOBALS[(module, name)]
        if _RECORD_MODULES.match(module) and _RECORD_NAMES.match(name):
            return _record_class(module, name)
        raise CheckpointError(
            f"{self._path}: the pickle references `{module}.{name}`, which a Haiku/JAX checkpoint "
            "never needs; refusing to load it because unpickling it could run code. Only numpy "
            "arrays, dicts and Haiku mappings are read. If this file really is a published "
            "ReLICv2/BYOL checkpoint, please report the class name.")

    def persistent_load(self, pid):
        raise CheckpointError(f"{self._path}: persistent ids are not used by Haiku checkpoints.")


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


def load_checkpoint(path: str, *, trust_pickle: bool = False, expected_sha256: str | None = None,
                    progress: bool = False) -> Any:
    """Reads a Haiku checkpoint pickle with the restricted unpickler.

    A pickle is a program: opening one from an untrusted source can run code. The restricted
    unpickler refuses every global outside SAFE_GLOBALS, but it is not a sandbox (a crafted file
    can still exhaust memory), so the file must be trusted explicitly: either `trust_pickle=True`
    (you downloaded it yourself from the authors' link) or `expected_sha256` equal to a checksum
    obtained from a trusted source (the path is then "known safe").
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file; pass the downloaded .pkl file.")
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


# ------------------------------------------------------------------------------------------------
# Locating the encoder in the checkpoint.


def _plain(tree):
    """Haiku mappings (possibly nested) -> plain dicts of numpy arrays."""
    if isinstance(tree, dict):
        return {k: _plain(v) for k, v in tree.items()}
    return tree


def _field(container, key):
    if isinstance(container, dict):
        return container.get(key)
    if hasattr(container, "_fields"):
        return getattr(container, key, None)
    return None


def encoder_trees(checkpoint, path: str = "checkpoint") -> tuple[dict, dict, int | None]:
    """(params, state, step) of the online encoder in a pretraining or linear-eval checkpoint."""
    state = _field(checkpoint, "experiment_state") if isinstance(checkpoint, dict) else None
    if state is None:
        state = checkpoint
    if isinstance(state, OpaqueRecord):
        raise CheckpointError(
            f"{path}: experiment_state is `{state.record_name}`, whose fields are unknown; "
            "expected a dict or one of " + ", ".join(KNOWN_RECORD_FIELDS) + ".")
    for params_key, state_key in zip(PARAM_KEYS, STATE_KEYS):
        params = _field(state, params_key)
        if params is not None:
            bn_state = _field(state, state_key)
            if bn_state is None:
                raise CheckpointError(f"{path}: `{params_key}` found but no `{state_key}` "
                                      "(batch-norm statistics); the checkpoint is incomplete.")
            step = checkpoint.get("step") if isinstance(checkpoint, dict) else None
            return _plain(params), _plain(bn_state), step
    found = sorted(state) if isinstance(state, dict) else type(state).__name__
    raise CheckpointError(
        f"{path}: no `online_params` (pretraining) or `backbone_params` (linear evaluation) in the "
        f"experiment state (found {found}); is this a ReLICv2/BYOL checkpoint?")


# ------------------------------------------------------------------------------------------------
# Architecture inference.


@dataclasses.dataclass
class Architecture:
    prefix: str  # Haiku module path of the encoder, "" or ending with "/~/"
    depth: int
    width_multiplier: float
    replicated: bool  # every array carries a leading replica axis (ReLICv2 files)


def _find_prefix(params: dict, path: str) -> str:
    candidates = sorted(k[: -len("initial_conv")] for k in params
                        if k == "initial_conv" or k.endswith(HAIKU_SEPARATOR + "initial_conv"))
    if len(candidates) != 1:
        raise CheckpointError(
            f"{path}: expected one ResNet `initial_conv` module, found {len(candidates)} "
            f"({candidates}); module paths look like `res_net50/~/initial_conv`.")
    return candidates[0]


def infer_architecture(params: dict, path: str = "checkpoint", depth: int | None = None,
                       width_multiplier: float | None = None) -> Architecture:
    """Depth and width from parameter shapes (blocks per group, bottleneck, stem channels)."""
    prefix = _find_prefix(params, path)
    stem = params[prefix + "initial_conv"].get("w")
    if stem is None or np.ndim(stem) not in (4, 5):
        raise CheckpointError(f"{path}: `{prefix}initial_conv/w` missing or not a 4-D conv kernel.")
    replicated = np.ndim(stem) == 5
    blocks = []
    bottleneck = False
    for group in range(4):
        pattern = re.compile(re.escape(f"{prefix}block_group_{group}{HAIKU_SEPARATOR}block_")
                             + r"(\d+)" + re.escape(HAIKU_SEPARATOR) + r"(\w+)$")
        found = {}
        for key in params:
            match = pattern.match(key)
            if match:
                found.setdefault(int(match.group(1)), set()).add(match.group(2))
        blocks.append(len(found))
        bottleneck = bottleneck or any("conv_2" in modules for modules in found.values())
    inferred_depth = next((d for d, (b, bn) in resnet_lib.RESNET_BLOCKS.items()
                           if tuple(b) == tuple(blocks) and bn == bottleneck), None)
    if depth is None:
        if inferred_depth is None:
            raise CheckpointError(
                f"{path}: blocks per group {tuple(blocks)} (bottleneck={bottleneck}) match none of "
                f"the ResNet depths {sorted(resnet_lib.RESNET_BLOCKS)}; pass --depth to force one.")
        depth = inferred_depth
    if width_multiplier is None:
        width_multiplier = stem.shape[-1] / 64  # the stem is 64 x width (ResNetTorso)
    if float(width_multiplier).is_integer():
        width_multiplier = int(width_multiplier)
    return Architecture(prefix, depth, width_multiplier, replicated)


# ------------------------------------------------------------------------------------------------
# Conversion.


@dataclasses.dataclass
class ConversionReport:
    depth: int
    width_multiplier: float
    prefix: str
    replicated: bool
    num_parameters: int  # trainable: conv kernels + batch-norm scale/offset
    num_statistics: int  # batch-norm moving means and variances
    num_tensors: int
    ignored_modules: list
    step: int | None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def model_config_for(architecture: Architecture) -> dict:
    return {"depth": architecture.depth, "width_multiplier": architecture.width_multiplier,
            "bn_momentum": BN_MOMENTUM, "bn_epsilon": BN_EPSILON}


def _haiku_path(prefix: str, layer_name: str) -> str:
    return prefix + layer_name.replace("__", HAIKU_SEPARATOR)


class _Tensors:
    """The checkpoint's encoder tensors, each of which must be taken exactly once."""

    def __init__(self, params, state, architecture, path):
        self._path = path
        self._replicated = architecture.replicated
        self.tensors = {}
        self.ignored = set()
        prefix = architecture.prefix
        for kind, tree in (("params", params), ("state", state)):
            for module, values in tree.items():
                if not module.startswith(prefix):
                    self.ignored.add(module.split(HAIKU_SEPARATOR)[0])
                    continue
                if module[len(prefix):] in IGNORED_ENCODER_MODULES:
                    self.ignored.add(module)
                    continue
                if not isinstance(values, dict):
                    raise CheckpointError(f"{path}: {kind} `{module}` is a "
                                          f"{type(values).__name__}, expected a mapping.")
                for name, value in values.items():
                    self.tensors[f"{module}/{name}"] = value
        self.problems = []

    def take(self, name, expected_shape=None):
        if name not in self.tensors:
            self.problems.append(f"missing tensor `{name}`")
            return None
        value = np.asarray(self.tensors.pop(name))
        if self._replicated:
            value = value[0]
        if expected_shape is not None:
            size = int(np.prod(expected_shape))
            channel_vector = len(expected_shape) == 1 and value.size == size and all(
                d == 1 for d in value.shape[:-1])
            if value.shape != tuple(expected_shape) and not channel_vector:
                self.problems.append(f"tensor `{name}` has shape {value.shape}, the "
                                     f"{'x'.join(map(str, expected_shape))} model expects "
                                     f"{tuple(expected_shape)}")
                return None
            value = value.reshape(expected_shape)
        return value.astype(np.float32)


def _assign_conv(layer, tensors, module):
    kernel = tensors.take(f"{module}/w", layer.kernel.shape)
    if kernel is not None:
        layer.kernel.assign(kernel)
    return [layer.kernel]


def _assign_batch_norm(layer, tensors, module):
    channels = (layer.gamma.shape[0],)
    pairs = [(layer.gamma, f"{module}/scale"), (layer.beta, f"{module}/offset"),
             (layer.moving_mean, f"{module}{HAIKU_SEPARATOR}mean_ema/average"),
             (layer.moving_variance, f"{module}{HAIKU_SEPARATOR}var_ema/average")]
    for variable, name in pairs:
        value = tensors.take(name, channels)
        if value is not None:
            variable.assign(value)
    for ema in ("mean_ema", "var_ema"):
        for extra in EMA_EXTRA_KEYS:  # consumed, not needed for inference
            tensors.tensors.pop(f"{module}{HAIKU_SEPARATOR}{ema}/{extra}", None)
    return [v for v, _ in pairs]


def load_haiku_weights(encoder: keras.Model, params: dict, state: dict,
                       architecture: Architecture, path: str = "checkpoint") -> ConversionReport:
    """Assigns every encoder tensor of (params, state) to `encoder`, exactly once."""
    tensors = _Tensors(params, state, architecture, path)
    assigned = []
    for layer in encoder.layers:
        if not layer.weights:
            continue
        module = _haiku_path(architecture.prefix, layer.name)
        if isinstance(layer, keras.layers.Conv2D):
            assigned += _assign_conv(layer, tensors, module)
        elif isinstance(layer, keras.layers.BatchNormalization):
            assigned += _assign_batch_norm(layer, tensors, module)
        else:
            raise TypeError(f"no Haiku mapping for layer {layer.name} ({type(layer).__name__})")
    problems = tensors.problems + [f"left-over tensor `{name}` (no layer of the "
                                   f"{architecture.depth}-layer x{architecture.width_multiplier:g} "
                                   "encoder takes it)" for name in sorted(tensors.tensors)]
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise CheckpointError(
            f"{path}: the checkpoint does not match a ResNet-{architecture.depth} "
            f"x{architecture.width_multiplier:g} ({len(problems)} problems):\n  {shown}{more}\n"
            "Check --depth/--width, or that the file is a ReLICv2/BYOL ResNet checkpoint.")
    if len({id(v) for v in assigned}) != len(encoder.weights):
        raise AssertionError("internal: some encoder variables were not assigned exactly once")
    trainable = sum(int(np.prod(v.shape)) for v in encoder.trainable_weights)
    statistics = sum(int(np.prod(v.shape)) for v in encoder.non_trainable_weights)
    return ConversionReport(
        depth=architecture.depth, width_multiplier=architecture.width_multiplier,
        prefix=architecture.prefix, replicated=architecture.replicated,
        num_parameters=trainable, num_statistics=statistics, num_tensors=len(assigned),
        ignored_modules=sorted(tensors.ignored), step=None)


def convert_checkpoint(path: str, *, trust_pickle: bool = False,
                       expected_sha256: str | None = None, depth: int | None = None,
                       width_multiplier: float | None = None, progress: bool = False,
                       ) -> tuple[keras.Model, dict, ConversionReport]:
    """Reads a ReLICv2/BYOL Haiku checkpoint -> (Keras encoder, model_config, report).

    `model_config` is what `encoder_io.save_encoder` stores; depth and width are inferred from
    the parameter shapes unless given.
    """
    checkpoint = load_checkpoint(path, trust_pickle=trust_pickle,
                                 expected_sha256=expected_sha256, progress=progress)
    params, state, step = encoder_trees(checkpoint, path)
    del checkpoint  # target network and optimiser state: release the memory early
    architecture = infer_architecture(params, path, depth, width_multiplier)
    model_config = model_config_for(architecture)
    try:
        encoder = encoder_io.build_encoder(model_config)
    except ValueError as e:
        raise CheckpointError(f"{path}: cannot build the encoder {model_config}: {e}") from e
    report = load_haiku_weights(encoder, params, state, architecture, path)
    report.step = int(step) if step is not None else None
    return encoder, model_config, report
