"""Import the published ReLICv2 / BYOL Haiku checkpoints into our Keras ResNet.

The authors of ReLICv2 (google-deepmind/relicv2, README "ReLICv2 Checkpoints") and of BYOL
(deepmind-research/byol) released their pretrained encoders as `dill` pickles of

    {"experiment_state": <online_params, online_state, target_*, opt_state...>, "step", "rng"}

where `online_params` / `online_state` map Haiku module paths (`res_net50/~/block_group_0/~/
block_0/~/conv_0`) to `{param name: array}`. ReLICv2's state is a dict and keeps a leading replica
axis on every array (its evaluation code reads it with `get_first`); BYOL's state is the
`_ByolExperimentState` named tuple. Neither Haiku nor JAX is needed to read them: the restricted
unpickler of `models/safe_pickle.py` turns Haiku's mapping classes into dicts and the numpy /
dill / jax array helpers into numpy arrays, and refuses every other global (a pickle can run
arbitrary code).

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

import dataclasses
import re

import keras
import numpy as np

from relicv2_tf.models import encoder_io
from relicv2_tf.models import resnet as resnet_lib
from relicv2_tf.models.safe_pickle import (
    KNOWN_RECORD_FIELDS,
    CheckpointError,
    OpaqueRecord,
    load_checkpoint,
)

HAIKU_SEPARATOR = "/~/"
BN_MOMENTUM = 0.9  # Haiku ResNet decay_rate in BYOL / ReLICv2
BN_EPSILON = 1e-5  # Haiku BatchNorm eps
STATE_KEYS = ("online_state", "backbone_state")
PARAM_KEYS = ("online_params", "backbone_params")
IGNORED_ENCODER_MODULES = ("logits",)  # hk.nets.ResNet's classifier: not part of the encoder
EMA_EXTRA_KEYS = ("hidden", "counter")  # biased average and step count; inference uses `average`


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


def check_complete(path: str, problems: list, assigned: list, encoder, model: str, fix: str):
    """One CheckpointError naming every missing / left-over / mis-shaped tensor (the first 20),
    then the invariant that every encoder variable was assigned exactly once."""
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise CheckpointError(f"{path}: the checkpoint does not match {model} "
                              f"({len(problems)} problems):\n  {shown}{more}\n{fix}")
    if len({id(v) for v in assigned}) != len(encoder.weights):
        raise AssertionError("internal: some encoder variables were not assigned exactly once")


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
    check_complete(path, problems, assigned, encoder,
                   f"a ResNet-{architecture.depth} x{architecture.width_multiplier:g}",
                   "Check --depth/--width, or that the file is a ReLICv2/BYOL ResNet checkpoint.")
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
