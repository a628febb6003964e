"""Import the public SwAV PyTorch checkpoints (facebookresearch/swav) into our Keras ResNet.

ReLICv2's saliency network (appendix F.2.1) starts from "the publicly available pretrained SwAV
model", a ResNet-50 2x. The SwAV README releases `swav_800ep_pretrain.pth.tar` etc. (ResNet-50)
and `swav_RN50w{2,4,5}_400ep_pretrain.pth.tar` (widths x2, x4, x5): `torch.save` files of the
DistributedDataParallel `state_dict`, so every key starts with `module.`. `models/torch_pickle.py`
reads them without PyTorch; the training checkpoints of `main_swav.py` (`{"epoch", "state_dict",
...}`) are accepted too.

The torso is swav's `src/resnet50.py`, torchvision's ResNet v1.5 layout:
  * stem `ConstantPad2d(1)` + 7x7/2 convolution with padding 2 (= padding 3, as torchvision, which
    swav's hubconf.py loads the same weights into), BN, ReLU, 3x3/2 max-pool with padding 1;
  * `Bottleneck` blocks [3, 4, 6, 3], the stride on the 3x3 convolution `conv2`, projection
    `downsample.0` (1x1 conv) / `downsample.1` (BN) in the first block of each layer;
  * `widen` multiplies every channel count including the stem; in the released wide files the
    bottleneck width is 64 x widen in layer1 (94M / 375M / 586M parameters, README), which is our
    `width_multiplier` exactly (the current `resnet50.py` sets `base_width = 64 * widen`, which
    makes the bottlenecks `widen` times wider again and does not load those files: swav issue #49);
  * `nn.BatchNorm2d`: eps 1e-5, momentum 0.1 (our decay 0.9).
So it is `models/resnet.py` with `padding="torch"`: PyTorch's explicit symmetric padding differs
from TF "SAME" on stride-2 layers. The tensors map as
  `conv1` / `bn1`                    -> `initial_conv` / `initial_batchnorm`
  `layer{g+1}.{b}.conv{i+1}` / `bn{i+1}` -> `block_group_{g}__block_{b}__conv_{i}` / `batchnorm_{i}`
  `layer{g+1}.{b}.downsample.0` / `.1`   -> `..._shortcut_conv` / `..._shortcut_batchnorm`
  conv `weight` [out, in, kh, kw] (OIHW) -> Conv2D kernel [kh, kw, in, out] (HWIO)
  BN `weight`, `bias`, `running_mean`, `running_var` -> gamma, beta, moving_mean, moving_variance
(`num_batches_tracked` is dropped: inference does not use it). Every encoder tensor is assigned
exactly once; a missing, left-over or mis-shaped tensor stops the import with one error naming
each. The projection head and the prototypes (`projection_head.*`, `prototypes.*`) are skipped and
listed in the report.
"""

from __future__ import annotations

import re

import keras
import numpy as np

from relicv2_tf.models import encoder_io
from relicv2_tf.models import resnet as resnet_lib
from relicv2_tf.models.convert import Architecture, ConversionReport, check_complete
from relicv2_tf.models.safe_pickle import CheckpointError
from relicv2_tf.models.torch_pickle import load_torch_file

DATA_PARALLEL_PREFIX = "module."
IGNORED_HEADS = ("projection_head", "prototypes")  # SwAV's head, not part of the encoder
BN_MOMENTUM = 0.9  # torch BatchNorm2d momentum 0.1 (new = 0.9 old + 0.1 batch)
BN_EPSILON = 1e-5  # torch BatchNorm2d eps
BN_TENSORS = (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
              ("moving_variance", "running_var"))
_LAYER_NAME = re.compile(
    r"^block_group_(\d+)__block_(\d+)__(conv_|batchnorm_|shortcut_conv|shortcut_batchnorm)(\d*)$")


def swav_state_dict(checkpoint, path: str = "checkpoint") -> tuple[dict, str, int | None]:
    """(tensors without the DDP prefix, that prefix, epoch) of a SwAV state dict or checkpoint."""
    epoch = None
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        epoch = checkpoint.get("epoch")  # main_swav.py's training checkpoint
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), found "
                              f"{type(checkpoint).__name__}; is this a SwAV checkpoint?")
    not_arrays = sorted(k for k, v in checkpoint.items() if not isinstance(v, np.ndarray))
    if not_arrays:
        raise CheckpointError(f"{path}: state dict entries that are not tensors: {not_arrays[:5]}.")
    prefix = DATA_PARALLEL_PREFIX if all(
        k.startswith(DATA_PARALLEL_PREFIX) for k in checkpoint) else ""
    tensors = {k[len(prefix):]: v for k, v in checkpoint.items()}
    return tensors, prefix, epoch if isinstance(epoch, int) else None


def infer_architecture(tensors: dict, path: str = "checkpoint", prefix: str = "",
                       depth: int | None = None,
                       width_multiplier: float | None = None) -> Architecture:
    """Depth from the blocks per layer (and bottleneck), width from the stem's channels / 64."""
    stem = tensors.get("conv1.weight")
    if stem is None or stem.ndim != 4 or stem.shape[1:] != (3, 7, 7):
        raise CheckpointError(f"{path}: no `{prefix}conv1.weight` of shape (C, 3, 7, 7); is this "
                              "a torchvision-layout ResNet (SwAV) checkpoint?")
    blocks, bottleneck = [], False
    for group in range(1, 5):
        pattern = re.compile(rf"^layer{group}\.(\d+)\.")
        blocks.append(len({m.group(1) for m in map(pattern.match, tensors) if m}))
        bottleneck = bottleneck or any(k.startswith(f"layer{group}.") and ".conv3." in k
                                       for k in tensors)
    if depth is None:
        depth = next((d for d, (b, bn) in resnet_lib.RESNET_BLOCKS.items()
                      if tuple(b) == tuple(blocks) and bn == bottleneck), None)
        if depth is None:
            raise CheckpointError(
                f"{path}: blocks per layer {tuple(blocks)} (bottleneck={bottleneck}) match none of "
                f"the ResNet depths {sorted(resnet_lib.RESNET_BLOCKS)}; pass --depth to force one.")
    if width_multiplier is None:
        width_multiplier = stem.shape[0] / 64  # swav: width_per_group (64) x widen
    if float(width_multiplier).is_integer():
        width_multiplier = int(width_multiplier)
    return Architecture(prefix, depth, width_multiplier, replicated=False)


def model_config_for(architecture: Architecture) -> dict:
    return {"depth": architecture.depth, "width_multiplier": architecture.width_multiplier,
            "bn_momentum": BN_MOMENTUM, "bn_epsilon": BN_EPSILON, "padding": "torch"}


def torch_module_name(layer_name: str) -> str:
    """Our layer name -> swav's module (`block_group_1__block_0__conv_1` -> `layer2.0.conv2`)."""
    if layer_name in ("initial_conv", "initial_batchnorm"):
        return "conv1" if layer_name == "initial_conv" else "bn1"
    match = _LAYER_NAME.match(layer_name)
    if not match:
        raise TypeError(f"no SwAV mapping for layer {layer_name}")
    group, block, kind, index = match.groups()
    module = f"layer{int(group) + 1}.{block}."
    if kind == "shortcut_conv":
        return module + "downsample.0"
    if kind == "shortcut_batchnorm":
        return module + "downsample.1"
    return module + ("conv" if kind == "conv_" else "bn") + str(int(index) + 1)


class _Tensors:
    """The state dict's encoder tensors, each of which must be taken exactly once."""

    def __init__(self, tensors: dict, prefix: str):
        self._prefix = prefix
        self.tensors = {k: v for k, v in tensors.items() if k.split(".")[0] not in IGNORED_HEADS}
        self.ignored = sorted({k.split(".")[0] for k in tensors} & set(IGNORED_HEADS))
        self.problems = []

    def take(self, name: str, expected_shape: tuple):
        if name not in self.tensors:
            self.problems.append(f"missing tensor `{self._prefix}{name}`")
            return None
        value = self.tensors.pop(name)
        if value.shape != tuple(expected_shape):
            self.problems.append(f"tensor `{self._prefix}{name}` has shape {value.shape}, the "
                                 f"model expects {tuple(expected_shape)}")
            return None
        return value.astype(np.float32)


def load_swav_weights(encoder: keras.Model, tensors: dict, architecture: Architecture,
                      path: str = "checkpoint") -> ConversionReport:
    """Assigns every encoder tensor of a (prefix-free) SwAV state dict to `encoder` exactly once."""
    state = _Tensors(tensors, architecture.prefix)
    assigned = []
    for layer in encoder.layers:
        if not layer.weights:
            continue
        module = torch_module_name(layer.name)
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            kernel = state.take(f"{module}.weight", (cout, cin, kh, kw))
            if kernel is not None:
                layer.kernel.assign(kernel.transpose(2, 3, 1, 0))  # OIHW -> HWIO
            assigned.append(layer.kernel)
        elif isinstance(layer, keras.layers.BatchNormalization):
            for attribute, torch_name in BN_TENSORS:
                variable = getattr(layer, attribute)
                value = state.take(f"{module}.{torch_name}", tuple(variable.shape))
                if value is not None:
                    variable.assign(value)
                assigned.append(variable)
            state.tensors.pop(f"{module}.num_batches_tracked", None)  # not used for inference
        else:
            raise TypeError(f"no SwAV mapping for layer {layer.name} ({type(layer).__name__})")
    model = f"ResNet-{architecture.depth} x{architecture.width_multiplier:g}"
    problems = state.problems + [
        f"left-over tensor `{architecture.prefix}{name}` (no layer of the {model} encoder takes "
        "it)" for name in sorted(state.tensors)]
    check_complete(path, problems, assigned, encoder, f"a {model} with torchvision/SwAV names",
                   "Check --depth/--width, or that the file is a SwAV ResNet checkpoint (the "
                   "released files have 64 x width bottleneck channels in layer1; see "
                   "docs/PUBLISHED_ENCODERS.md).")
    return ConversionReport(
        depth=architecture.depth, width_multiplier=architecture.width_multiplier,
        prefix=architecture.prefix, replicated=False,
        num_parameters=sum(int(np.prod(v.shape)) for v in encoder.trainable_weights),
        num_statistics=sum(int(np.prod(v.shape)) for v in encoder.non_trainable_weights),
        num_tensors=len(assigned), ignored_modules=state.ignored, step=None)


def convert_swav_checkpoint(path: str, *, trust_pickle: bool = False,
                            expected_sha256: str | None = None, depth: int | None = None,
                            width_multiplier: float | None = None,
                            ) -> tuple[keras.Model, dict, ConversionReport]:
    """Reads a SwAV `torch.save` checkpoint -> (Keras encoder, model_config, report).

    `model_config` (with `padding="torch"`) is what `encoder_io.save_encoder` stores; depth and
    width are inferred from the tensor shapes unless given. `report.step` is the training epoch
    when the file is a `main_swav.py` checkpoint, else None.
    """
    checkpoint = load_torch_file(path, trust_pickle=trust_pickle,
                                 expected_sha256=expected_sha256)
    tensors, prefix, epoch = swav_state_dict(checkpoint, path)
    del checkpoint  # optimiser state of training checkpoints: release it early
    architecture = infer_architecture(tensors, path, prefix, depth, width_multiplier)
    model_config = model_config_for(architecture)
    try:
        encoder = encoder_io.build_encoder(model_config)
    except ValueError as e:
        raise CheckpointError(f"{path}: cannot build the encoder {model_config}: {e}") from e
    report = load_swav_weights(encoder, tensors, architecture, path)
    report.step = epoch
    return encoder, model_config, report
