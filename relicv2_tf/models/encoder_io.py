"""Saving and loading a trained encoder: the hand-off between pretraining and every other tool.

An encoder directory holds `encoder.weights.h5` (Keras weights) and `model_config.json` (the
`resnet()` arguments), so any tool rebuilds the exact architecture without the training config.
Both files are written to temporary names and renamed, so a crash never leaves a half directory.
"""

from __future__ import annotations

import json
import os

import keras

from relicv2_tf.models import resnet as resnet_lib

WEIGHTS_FILE = "encoder.weights.h5"
CONFIG_FILE = "model_config.json"
RESNET_KEYS = ("depth", "width_multiplier", "bn_momentum", "bn_epsilon")


def encoder_config(model_config) -> dict:
    """The `resnet()` arguments from a config (ConfigDict or dict) with at least depth/width."""
    return {k: model_config[k] for k in RESNET_KEYS if k in model_config}


def build_encoder(config: dict, **kwargs) -> keras.Model:
    return resnet_lib.resnet(**{**config, **kwargs}, name="encoder")


def save_encoder(encoder: keras.Model, model_config, directory: str) -> str:
    os.makedirs(directory, exist_ok=True)
    config = encoder_config(model_config)
    weights_tmp = os.path.join(directory, "tmp-" + WEIGHTS_FILE)
    encoder.save_weights(weights_tmp)
    os.replace(weights_tmp, os.path.join(directory, WEIGHTS_FILE))
    config_tmp = os.path.join(directory, "tmp-" + CONFIG_FILE)
    with open(config_tmp, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    os.replace(config_tmp, os.path.join(directory, CONFIG_FILE))
    return directory


def load_encoder(directory: str, **kwargs) -> keras.Model:
    """Rebuilds and loads an encoder directory; kwargs override `resnet()` args (e.g. synchronized_bn)."""
    config_path = os.path.join(directory, CONFIG_FILE)
    weights_path = os.path.join(directory, WEIGHTS_FILE)
    for path in (config_path, weights_path):
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} not found: an encoder directory is written by `relicv2-pretrain` "
                f"(<workdir>/encoder) or `relicv2-import`; pass that directory.")
    with open(config_path) as f:
        config = json.load(f)
    encoder = build_encoder(config, **kwargs)
    encoder.load_weights(weights_path)
    return encoder
