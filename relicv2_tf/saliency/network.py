"""The saliency network: a ResNet backbone from this project + a light FPN-style decoder.

ReLICv2 (appendix F.2.1) replaces DeepUSPS' CityScapes-supervised DRN backbone with a
self-supervised ResNet so that no label enters the pipeline. Here the backbone is
`models.resnet.resnet` initialised from an encoder directory written by pretraining
(`models.encoder_io.load_encoder`), or randomly only when `allow_random_init=True` (tests,
demos before any encoder exists). The decoder takes the output of every block group (strides 4,
8, 16, 32), projects each to `decoder_channels` with a 1x1 convolution, merges top-down by 2x
upsampling and addition (Lin et al. 2017, FPN), smooths with a 3x3 convolution + ReLU (no
batch norm in the decoder: its statistics would need many steps to settle on small subsets),
and predicts one logit per pixel at stride 4, bilinearly upsampled to the input size.

Inputs are ImageNet-normalised images [N, S, S, 3] (`data.normalize.normalize_images`) with S a
multiple of 32; the output is saliency logits [N, S, S, 1] (sigmoid -> saliency in [0, 1]).
"""

from __future__ import annotations

import json
import os

import keras

from relicv2_tf.models import encoder_io
from relicv2_tf.models import resnet as resnet_lib

NUM_GROUPS = 4


def group_outputs(backbone: keras.Model) -> list:
    """Feature maps at the end of block groups 0..3, found by layer name: the input of the first
    convolution of the next group, and for the last group the input of the global pool."""
    outputs = []
    for g in range(1, NUM_GROUPS):
        try:
            outputs.append(backbone.get_layer(f"block_group_{g}__block_0__conv_0").input)
        except ValueError as error:
            raise ValueError(
                f"backbone {backbone.name!r} is not a models.resnet.resnet encoder (no layer "
                f"block_group_{g}__block_0__conv_0).") from error
    outputs.append(backbone.get_layer("pool").input)
    return outputs


def build_backbone(encoder_dir: str = "", *, depth: int = 50, width_multiplier: float = 1,
                   allow_random_init: bool = False) -> keras.Model:
    """The encoder from `encoder_dir` (self-supervised, this project's format); a randomly
    initialised `resnet(depth, width_multiplier)` only when `allow_random_init` is set."""
    if encoder_dir:
        return encoder_io.load_encoder(encoder_dir)
    if not allow_random_init:
        raise ValueError(
            "the saliency backbone needs a self-supervised encoder directory "
            "(--config.network.encoder_dir=<pretrain workdir>/encoder); set "
            "--config.network.allow_random_init=True to train from scratch (tests / demos only).")
    return resnet_lib.resnet(depth, width_multiplier, name="encoder")


def saliency_network(backbone: keras.Model, image_size: int, decoder_channels: int = 64,
                     name: str = "saliency_network") -> keras.Model:
    """Backbone + FPN decoder -> logits [N, image_size, image_size, 1]."""
    if image_size % 32:
        raise ValueError(f"saliency image_size must be a multiple of 32 (got {image_size}): "
                         "the decoder merges stride-4..32 features by exact 2x upsampling.")
    features = keras.Model(backbone.inputs, group_outputs(backbone), name="backbone")
    images = keras.Input((image_size, image_size, 3), name="images")
    pyramid = features(images)
    x = None
    for level in reversed(range(NUM_GROUPS)):
        lateral = keras.layers.Conv2D(decoder_channels, 1, name=f"lateral_{level}")(pyramid[level])
        x = lateral if x is None else keras.layers.Add(name=f"merge_{level}")(
            [keras.layers.UpSampling2D(2, interpolation="bilinear",
                                       name=f"upsample_{level}")(x), lateral])
        x = keras.layers.Conv2D(decoder_channels, 3, padding="same", activation="relu",
                                name=f"smooth_{level}")(x)
    logits = keras.layers.Conv2D(1, 3, padding="same", name="logits")(x)
    logits = keras.layers.UpSampling2D(4, interpolation="bilinear", name="to_input_size")(logits)
    return keras.Model(images, logits, name=name)


def build_saliency_network(network_config, image_size: int) -> keras.Model:
    """From the `network` config block: encoder_dir, depth, width_multiplier,
    allow_random_init, decoder_channels."""
    backbone = build_backbone(
        network_config.encoder_dir, depth=network_config.depth,
        width_multiplier=network_config.width_multiplier,
        allow_random_init=network_config.allow_random_init)
    return saliency_network(backbone, image_size, network_config.decoder_channels)


# ------------------------------------------------------------------------------ save / load
NETWORK_WEIGHTS_FILE = "saliency_network.weights.h5"
NETWORK_CONFIG_FILE = "saliency_network.json"


def architecture(network_config, image_size: int) -> dict:
    """What `load_saliency_network` needs to rebuild the network without the encoder directory."""
    depth, width = network_config.depth, network_config.width_multiplier
    padding = "same"
    if network_config.encoder_dir:
        path = os.path.join(network_config.encoder_dir, encoder_io.CONFIG_FILE)
        if os.path.exists(path):
            with open(path) as f:
                encoder_config = json.load(f)
            depth = encoder_config["depth"]
            width = encoder_config.get("width_multiplier", 1)
            padding = encoder_config.get("padding", "same")  # "torch" for imported SwAV
    return {"depth": int(depth), "width_multiplier": float(width), "padding": padding,
            "decoder_channels": int(network_config.decoder_channels),
            "image_size": int(image_size), "encoder_dir": network_config.encoder_dir}


def save_saliency_network(model: keras.Model, arch: dict, directory: str) -> str:
    """Weights + architecture JSON, each written to a temporary name and renamed."""
    return encoder_io.save_model_directory(model, arch, directory, NETWORK_WEIGHTS_FILE,
                                           NETWORK_CONFIG_FILE)


def load_saliency_network(directory: str):
    """-> (model, architecture dict) from a directory written by `save_saliency_network`."""
    arch, weights_path = encoder_io.read_model_directory(
        directory, NETWORK_WEIGHTS_FILE, NETWORK_CONFIG_FILE,
        "`relicv2-saliency --stage=refine` (<workdir>/saliency_network)")
    backbone = resnet_lib.resnet(arch["depth"], arch["width_multiplier"],
                                 padding=arch.get("padding", "same"), name="encoder")
    model = saliency_network(backbone, arch["image_size"], arch["decoder_channels"])
    model.load_weights(weights_path)
    return model, arch
