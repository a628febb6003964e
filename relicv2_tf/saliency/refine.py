"""DeepUSPS-style two-stage refinement of handcrafted saliency maps (ReLICv2 appendix F.2.1).

DeepUSPS (Nguyen et al. 2019) turns the noisy maps of handcrafted methods into training targets:

Stage 1 (one pseudo-label network per prior): train on a subset of images against that prior's
maps for `rounds` self-training rounds. During a round the network is trained for
`epochs_per_round` epochs with pixel-wise binary cross-entropy on soft targets (`loss="bce"`)
or DeepUSPS' continuous F-measure loss (`loss="f_measure"`, `f_measure_loss`); after every
epoch its predictions on each (un-augmented) image are folded into a per-image moving average
(`prediction_ema`), DeepUSPS' self-supervision that smooths out the memorised noise of single
epochs. At the end of the round the targets are replaced by that moving average. The learning
rate of round r is `learning_rate * learning_rate_growth**r` (ReLICv2: start low, double each
round). Stage 2: the final saliency network is trained on the fused refined maps (mean over the
priors; `fusion_threshold` >= 0 binarises the fused map). Since BCE is linear in its target,
training on the mean map equals DeepUSPS' sum of per-method BCE losses up to a constant factor.

Adam with beta_1 = `adam_beta_1` (ReLICv2: "momentum set to ..."; the number was lost in the
extracted text, 0.9 assumed). Random horizontal flips augment
training (`flip`). Library code only: configs are passed in, nothing reads flags.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf
import tqdm

from relicv2_tf.data.normalize import normalize_images, to_unit_float
from relicv2_tf.optim import guard


def to_network_input(images_uint8) -> tf.Tensor:
    """uint8 [N, S, S, 3] -> ImageNet-normalised float32 (what every model here consumes)."""
    return normalize_images(to_unit_float(images_uint8))


def _inference_fn(model: keras.Model):
    """One traced inference function per model (cached on it: tracing costs seconds)."""
    infer = getattr(model, "_saliency_inference_fn", None)
    if infer is None:
        @tf.function(reduce_retracing=True)
        def infer(batch):
            return tf.sigmoid(model(to_network_input(batch), training=False))[..., 0]

        model._saliency_inference_fn = infer
    return infer


def predict_maps(model: keras.Model, images_uint8: np.ndarray, batch_size: int = 32
                 ) -> np.ndarray:
    """Saliency in [0, 1], float32 [N, S, S], inference mode."""
    infer = _inference_fn(model)
    outputs = [infer(images_uint8[i:i + batch_size]).numpy()
               for i in range(0, len(images_uint8), batch_size)]
    return np.concatenate(outputs, axis=0) if outputs else np.zeros((0,) + images_uint8.shape[1:3],
                                                                   np.float32)


def f_measure_loss(logits, targets, beta_squared: float = 1.0, eps: float = 1e-5):
    """DeepUSPS' continuous F-measure loss (their utils.F_cont): per image, with p = sigmoid
    (logits) and the target t, TP = sum p t, FP = sum p (1 - t), FN = sum (1 - p) t,
    P = TP / (TP + FP + eps), R = TP / (TP + FN + eps),
    F = (1 + beta^2) P R / (beta^2 P + R + eps); the loss is the batch mean of 1 - F.
    logits / targets: [N, H, W, 1]; targets in [0, 1] (DeepUSPS binarises them first)."""
    probabilities = tf.sigmoid(logits)
    axes = [1, 2, 3]
    true_positive = tf.reduce_sum(probabilities * targets, axes)
    false_positive = tf.reduce_sum(probabilities * (1 - targets), axes)
    false_negative = tf.reduce_sum((1 - probabilities) * targets, axes)
    precision = true_positive / (true_positive + false_positive + eps)
    recall = true_positive / (true_positive + false_negative + eps)
    f_measure = (1 + beta_squared) * precision * recall / (
        beta_squared * precision + recall + eps)
    return tf.reduce_mean(1 - f_measure)


LOSSES = ("bce", "f_measure")


@dataclasses.dataclass
class TrainOptions:
    epochs: int
    learning_rate: float
    batch_size: int
    prediction_ema: float = 0.5
    flip: bool = True
    seed: int = 0
    description: str = "train"
    loss: str = "bce"  # "bce": pixel-wise BCE on soft targets; "f_measure": f_measure_loss
    f_beta_squared: float = 1.0  # beta^2 of the F-measure loss


class Trainer:
    """One network, its Adam optimizer and one traced train step, reused for every stage.

    Every pseudo-label network and the final network start from the same initial weights (the
    self-supervised encoder + a fresh decoder); `reset()` restores them and clears Adam's state,
    so the traced step of each loss (seconds to trace on CPU) is built once for the whole
    pipeline.
    """

    def __init__(self, model: keras.Model, adam_beta_1: float = 0.9):
        self.model = model
        self.initial_weights = model.get_weights()
        self.optimizer = keras.optimizers.Adam(1e-3, beta_1=adam_beta_1)
        self.optimizer.build(model.trainable_variables)
        self._steps = {}

    def step_for(self, loss: str, f_beta_squared: float = 1.0):
        """The traced train step of one loss (built once per loss and beta^2)."""
        if loss not in LOSSES:
            raise ValueError(f"saliency loss {loss!r} is not one of {LOSSES}.")
        key = (loss, float(f_beta_squared))
        if key in self._steps:
            return self._steps[key]
        model = self.model
        bce = keras.losses.BinaryCrossentropy(from_logits=True)
        loss_fn = bce if loss == "bce" else (
            lambda maps, logits: f_measure_loss(logits, maps, f_beta_squared))

        @tf.function(reduce_retracing=True)
        def step(images, maps, flips):
            images = to_network_input(images)
            maps = maps[..., None]
            images = tf.where(flips[:, None, None, None], tf.reverse(images, [2]), images)
            maps = tf.where(flips[:, None, None, None], tf.reverse(maps, [2]), maps)
            with tf.GradientTape() as tape:
                value = loss_fn(maps, model(images, training=True))
            grads = tape.gradient(value, model.trainable_variables)
            finite = guard.replicas_all_finite(value, grads)
            guard.apply_if_finite([(self.optimizer, grads, model.trainable_variables)], finite)
            return value, finite

        self._steps[key] = step
        return step

    def reset(self):
        self.model.set_weights(self.initial_weights)
        for variable in self.optimizer.variables:
            variable.assign(tf.zeros_like(variable))

    def train(self, images_uint8: np.ndarray, targets: np.ndarray, options: TrainOptions,
              progress: bool = True) -> np.ndarray:
        """Trains on soft targets [N, S, S] in [0, 1]; returns the per-image moving average of
        the predictions across epochs (float32 [N, S, S])."""
        if len(images_uint8) != len(targets):
            raise ValueError(f"{len(images_uint8)} images but {len(targets)} target maps.")
        self.optimizer.learning_rate.assign(options.learning_rate)
        rng = np.random.default_rng(options.seed)
        targets = np.asarray(targets, np.float32)
        step = self.step_for(options.loss, options.f_beta_squared)
        average = None
        num = len(images_uint8)
        bar = tqdm.trange(options.epochs, desc=options.description, disable=not progress,
                          leave=False)
        for epoch in bar:
            order = rng.permutation(num)
            losses = []
            for start in range(0, num, options.batch_size):
                index = np.sort(order[start:start + options.batch_size])
                flips = rng.random(len(index)) < (0.5 if options.flip else 0.0)
                loss, finite = step(images_uint8[index], targets[index], flips)
                if not bool(finite):  # nothing of the step was applied; nothing is saved
                    raise guard.NonFiniteError(
                        f"saliency network ({options.description}): non-finite loss or "
                        f"gradients at epoch {epoch + 1}, batch {start // options.batch_size + 1}"
                        f" (learning rate {options.learning_rate:g}); nothing of the step was "
                        "applied and no network or maps of this stage were written. Check the "
                        "prior maps for NaNs or lower refine.learning_rate, then rerun the stage.")
                losses.append(float(loss))
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
            predictions = predict_maps(self.model, images_uint8, options.batch_size)
            average = predictions if average is None else (
                options.prediction_ema * average + (1 - options.prediction_ema) * predictions)
        return average if average is not None else targets


def refine_prior(trainer: Trainer, images_uint8: np.ndarray, prior_maps: np.ndarray,
                 refine_config, name: str = "prior", seed: int = 0, progress: bool = True,
                 round_callback=None) -> np.ndarray:
    """Stage 1 for one prior: `rounds` self-training rounds from the initial weights; the
    targets of round r + 1 are the moving-average predictions of round r. Returns them.
    `round_callback(round_number, model)`, when given, sees the network after each round (to
    save it and score it on the dev set: benchmarks/saliency_quality.py --stages_dir)."""
    trainer.reset()
    targets = np.asarray(prior_maps, np.float32)
    for round_index in range(refine_config.rounds):
        if round_index > 0 and refine_config.reset_each_round:
            trainer.reset()
        options = TrainOptions(
            epochs=refine_config.epochs_per_round,
            learning_rate=refine_config.learning_rate * refine_config.learning_rate_growth
            ** round_index,
            batch_size=refine_config.batch_size, prediction_ema=refine_config.prediction_ema,
            flip=refine_config.flip, seed=seed + round_index,
            description=f"{name} round {round_index + 1}", loss=refine_config.loss,
            f_beta_squared=refine_config.f_beta_squared)
        targets = trainer.train(images_uint8, targets, options, progress)
        if round_callback is not None:
            round_callback(round_index + 1, trainer.model)
    return targets


def fuse(refined_maps: dict, threshold: float = -1.0) -> np.ndarray:
    """Mean of the refined maps of the priors; binarised at `threshold` when it is >= 0."""
    fused = np.mean(np.stack([np.asarray(m, np.float32) for m in refined_maps.values()]), axis=0)
    if threshold >= 0:
        fused = (fused >= threshold).astype(np.float32)
    return fused


def train_final_network(trainer: Trainer, images_uint8: np.ndarray, fused: np.ndarray,
                        final_config, refine_config, seed: int = 0, progress: bool = True
                        ) -> keras.Model:
    """Stage 2: the saliency detection network, from the initial weights, on the fused maps."""
    trainer.reset()
    options = TrainOptions(
        epochs=final_config.epochs, learning_rate=final_config.learning_rate,
        batch_size=refine_config.batch_size, prediction_ema=refine_config.prediction_ema,
        flip=refine_config.flip, seed=seed, description="final network", loss=final_config.loss,
        f_beta_squared=final_config.f_beta_squared)
    trainer.train(images_uint8, fused, options, progress)
    return trainer.model


def run_refinement(network_factory, images_uint8: np.ndarray, priors: dict, config,
                   progress: bool = True, stage_callback=None):
    """Both stages. `priors`: {name: [N, S, S] maps in [0, 1]} on `images_uint8` [N, S, S, 3];
    `network_factory()` builds the (initialised) saliency network once;
    `stage_callback(stage_name, model)` (optional) sees every stage-1 network after each round
    (stage names `<prior>_round<r>`). Returns (final model, {name: refined maps}, fused maps)."""
    keras.utils.set_random_seed(config.seed)
    trainer = Trainer(network_factory(), config.refine.adam_beta_1)
    refined = {}
    for offset, (name, maps) in enumerate(priors.items()):
        callback = None if stage_callback is None else (
            lambda round_number, model, name=name: stage_callback(f"{name}_round{round_number}",
                                                                  model))
        refined[name] = refine_prior(trainer, images_uint8, maps, config.refine, name=name,
                                     seed=config.seed + 100 * offset, progress=progress,
                                     round_callback=callback)
    fused = fuse(refined, config.final.fusion_threshold)
    model = train_final_network(trainer, images_uint8, fused, config.final, config.refine,
                                seed=config.seed, progress=progress)
    return model, refined, fused
