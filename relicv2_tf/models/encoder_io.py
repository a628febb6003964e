"""Saving and loading a trained encoder: the hand-off between pretraining and every other tool.

An encoder directory holds `encoder.weights.h5` (Keras weights) and `model_config.json` (the
`resnet()` arguments), so any tool rebuilds the exact architecture without the training config.
Both files are written to temporary names and renamed, so a crash never leaves a half directory.
"""

from __future__ import annotations

import json
import os

import keras

from relicv2_tf import atomic
from relicv2_tf.models import resnet as resnet_lib

WEIGHTS_FILE = "encoder.weights.h5"
CONFIG_FILE = "model_config.json"
# `padding` is written only by imports of PyTorch checkpoints ("torch"); without it an encoder
# has the TF/Haiku "SAME" padding of pretraining (models/resnet.py).
RESNET_KEYS = ("depth", "width_multiplier", "bn_momentum", "bn_epsilon", "padding")


def encoder_config(model_config) -> dict:
    """The `resnet()` arguments from a config (ConfigDict or dict) with at least depth/width."""
    return {k: model_config[k] for k in RESNET_KEYS if k in model_config}


def build_encoder(config: dict, **kwargs) -> keras.Model:
    return resnet_lib.resnet(**{**config, **kwargs}, name="encoder")


def save_model_directory(model: keras.Model, config: dict, directory: str, weights_file: str,
                         config_file: str) -> str:
    """Writes `model`'s weights and `config` (JSON) into `directory`, each to a temporary name
    then renamed, so a crash leaves either the previous files or the new ones."""
    os.makedirs(directory, exist_ok=True)
    with atomic.temporary_path(os.path.join(directory, weights_file)) as tmp:
        model.save_weights(tmp)
    atomic.write_json(os.path.join(directory, config_file), config, indent=2, sort_keys=True)
    return directory


def read_model_directory(directory: str, weights_file: str, config_file: str, written_by: str):
    """-> (config dict, weights path) of a directory written by `save_model_directory`."""
    config_path = os.path.join(directory, config_file)
    weights_path = os.path.join(directory, weights_file)
    for path in (config_path, weights_path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found: such a directory is written by "
                                    f"{written_by}; pass that directory.")
    with open(config_path) as f:
        return json.load(f), weights_path


def save_encoder(encoder: keras.Model, model_config, directory: str) -> str:
    return save_model_directory(encoder, encoder_config(model_config), directory, WEIGHTS_FILE,
                                CONFIG_FILE)


def load_encoder(directory: str, **kwargs) -> keras.Model:
    """Rebuilds and loads an encoder directory; kwargs override `resnet()` args (e.g.
    synchronized_bn)."""
    config, weights_path = read_model_directory(
        directory, WEIGHTS_FILE, CONFIG_FILE,
        "`relicv2-pretrain` (<workdir>/encoder) or `relicv2-import`")
    encoder = build_encoder(config, **kwargs)
    encoder.load_weights(weights_path)
    return encoder
