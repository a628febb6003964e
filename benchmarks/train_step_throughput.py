"""Train-step throughput: ReLICv2 vs a supervised step of the same encoder, and the FLOP limit.

In one process, on the same devices, with interleaved timing windows (so machine noise hits
both), this measures images/s of
  * the ReLICv2 train step (`relicv2_tf.methods.relicv2`, LARS, EMA target), L large + S small
    views per image, and
  * a supervised train step of the same encoder: ResNet + linear classifier, softmax
    cross-entropy, the same LARS optimizer, at the large-view resolution;
counts the real FLOPs of both steps from their TensorFlow graphs (tf.profiler float-operation
counts: Conv2D / MatMul forward and their backprop kernels), and prints one JSON object with

    flop_multiple = [L * FB(online, large) + L * F(target, large) + S * FB(online, small)]
                    / FB(supervised, large)
    limit_ratio   = relicv2_images_per_s * flop_multiple / supervised_images_per_s

F = forward FLOPs per image, FB = forward+backward FLOPs per image (FB / F ~ 3: the JSON's
`fwd_bwd_over_fwd_encoder`), online = encoder + projector + predictor, target = encoder +
projector, supervised = encoder + linear classifier. With FB = 3 F for every network and no
heads, the multiple is the issue's "4 large fwd+bwd + 4 large target fwd + 2 small fwd+bwd"
= (4*3 + 4 + 2*3*(96/224)^2) / 3 = 5.70.
limit_ratio = 1 means the ReLICv2 step runs at the supervised step's FLOP rate (the target is
>= 0.85). Images/s are global; per-replica figures divide by the replica count.

    python benchmarks/train_step_throughput.py                       # tiny CPU default
    python benchmarks/train_step_throughput.py --depth 50 --width 1 --image_size 224 \
        --batch_size 64 --mixed_precision mixed_float16 --jit_compile   # a GPU
    python benchmarks/train_step_throughput.py --pipeline            # + the tf.data pipeline
    python benchmarks/train_step_throughput.py --strategy mirrored --num_cpu_replicas 2
    python benchmarks/train_step_throughput.py --profile_dir /tmp/prof   # + top ops, phases

--synthetic (default) feeds one constant batch of random views (the model alone); --pipeline
feeds `relicv2_tf.data.views.pretrain_dataset` on ImageFolder ../shared/data/imagenette (the
supervised step then reads the same images with `preprocess_for_linear_train`). The supervised
batch defaults to L x the ReLICv2 batch, the convolution batch of ReLICv2's large-view passes.
Batch norm is synchronised across replicas in both models unless --local_bn.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from experiments.configs import common  # noqa: E402  (no TensorFlow)

DEFAULT_DATA = pathlib.Path(common.data_path("imagenette"))
FORMULA = ("flop_multiple = (L*FB_online(large) + L*F_target(large) + S*FB_online(small)) / "
           "FB_supervised(large); limit_ratio = relicv2_images_per_s * flop_multiple / "
           "supervised_images_per_s")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depth", type=int, default=18)
    p.add_argument("--width", type=float, default=0.25, help="ResNet width multiplier")
    p.add_argument("--image_size", type=int, default=64, help="large views (paper: 224)")
    p.add_argument("--small_image_size", type=int, default=0,
                   help="small views; 0 = round(image_size * 96 / 224)")
    p.add_argument("--batch_size", type=int, default=32, help="ReLICv2 global batch (images)")
    p.add_argument("--supervised_batch_size", type=int, default=0,
                   help="0 = L * batch_size: the same convolution batch as ReLICv2's large views")
    p.add_argument("--views", default="4,2", help="L,S: large and small views per image")
    p.add_argument("--head_width", type=float, default=0,
                   help="scale of the 4096-256 projector/predictor; 0 = the ResNet width")
    p.add_argument("--num_negatives", type=int, default=10)
    p.add_argument("--num_classes", type=int, default=1000)
    p.add_argument("--local_bn", action="store_true",
                   help="per-replica batch norm (default: synchronised, the paper's recipe)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--synthetic", dest="pipeline", action="store_false",
                      help="model alone on constant random tensors (default)")
    mode.add_argument("--pipeline", dest="pipeline", action="store_true",
                      help="full tf.data pipeline from ImageFolder --data_dir")
    p.set_defaults(pipeline=False)
    p.add_argument("--data_dir", default=str(DEFAULT_DATA))
    p.add_argument("--jit_compile", action="store_true")
    p.add_argument("--mixed_precision", default="",
                   choices=["", "mixed_bfloat16", "mixed_float16"])
    p.add_argument("--steps_per_execution", type=int, default=1)
    p.add_argument("--strategy", default="default", choices=["default", "mirrored"])
    p.add_argument("--num_cpu_replicas", type=int, default=0)
    p.add_argument("--warmup_steps", type=int, default=3)
    p.add_argument("--steps", type=int, default=4, help="train steps per timed window")
    p.add_argument("--repeats", type=int, default=5, help="timed windows per model")
    p.add_argument("--profile_dir", default="", help="write a tf.profiler trace of a few steps "
                   "of each model here and add a top-op summary to the JSON")
    p.add_argument("--top_ops", type=int, default=12)
    return p.parse_args(argv)


def make_config(args):
    from relicv2_tf import config as config_lib

    num_large, num_small = (int(v) for v in args.views.split(","))
    head = args.head_width or args.width
    config = config_lib.get_default_config()
    config.data.source = "image_folder" if args.pipeline else "synthetic"
    config.data.data_dir = args.data_dir if args.pipeline else ""
    config.data.image_size = args.image_size
    config.data.small_image_size = args.small_image_size or round(args.image_size * 96 / 224)
    config.data.num_large_views, config.data.num_small_views = num_large, num_small
    config.data.shuffle_buffer = 256
    config.model.depth = args.depth
    config.model.width_multiplier = args.width
    config.model.synchronized_bn = not args.local_bn
    config.model.projector_hidden_dim = max(8, int(4096 * head))
    config.model.projector_output_dim = max(8, int(256 * head))
    config.model.predictor_hidden_dim = max(8, int(4096 * head))
    config.loss.num_negatives = args.num_negatives
    config.training.batch_size = args.batch_size
    config.training.jit_compile = args.jit_compile
    config.training.mixed_precision = args.mixed_precision
    config.training.steps_per_execution = args.steps_per_execution
    config.training.synthetic_data = not args.pipeline
    config.optimizer.warmup_epochs = 0
    return config


# ------------------------------------------------------------------------------------ models
def build_relicv2(config, strategy):
    from relicv2_tf import train
    from relicv2_tf.methods import build_method

    with strategy.scope():
        model = build_method(config, total_steps=10_000)
        model.compile(optimizer=train.make_optimizer(config, 10_000, 100),
                      steps_per_execution=config.training.steps_per_execution,
                      jit_compile=config.training.jit_compile)
    return model


def build_supervised(config, strategy, num_classes):
    import keras

    from relicv2_tf import train
    from relicv2_tf.models import resnet

    c = config.model
    with strategy.scope():
        encoder = resnet.resnet(c.depth, c.width_multiplier, bn_momentum=c.bn_momentum,
                                bn_epsilon=c.bn_epsilon, synchronized_bn=c.synchronized_bn,
                                name="encoder")
        images = keras.Input((None, None, 3))
        # float32 logits under mixed precision (the softmax and the loss stay in float32).
        logits = keras.layers.Dense(num_classes, dtype="float32", name="classifier")(
            encoder(images))
        model = keras.Model(images, logits, name="supervised")
        model.compile(optimizer=train.make_optimizer(config, 10_000, 100),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      steps_per_execution=config.training.steps_per_execution,
                      jit_compile=config.training.jit_compile)
        # Slots built eagerly, as SelfSupervisedModel.compile does: a first call that creates
        # variables would make tf.function trace the step twice.
        model.optimizer.build(model.trainable_variables)
    return model


# -------------------------------------------------------------------------------------- data
def relicv2_dataset_fn(config, per_replica):
    from relicv2_tf import train
    from relicv2_tf.data import views

    def dataset_fn(input_context):
        if config.training.synthetic_data:
            return train.synthetic_views_dataset(config.data, per_replica,
                                                 seed=input_context.input_pipeline_id)
        return views.pretrain_dataset(config.data, batch_size=per_replica, seed=0,
                                      input_context=input_context)
    return dataset_fn


def supervised_dataset_fn(config, per_replica, num_classes):
    import tensorflow as tf

    from relicv2_tf.data import eval_preprocess, sources

    size = config.data.image_size

    def dataset_fn(input_context):
        if config.training.synthetic_data:
            seed = [input_context.input_pipeline_id, 2]
            images = tf.random.stateless_normal([per_replica, size, size, 3], seed)
            labels = tf.random.stateless_uniform([per_replica], seed, 0, num_classes, tf.int32)
            return tf.data.Dataset.from_tensors((images, labels)).repeat()
        source = sources.make_source(config.data, input_context=input_context, seed=0)

        def preprocess(index, example):
            seed = tf.stack([tf.constant(0, tf.int64), index])
            image = eval_preprocess.preprocess_for_linear_train(example["image"], seed, size)
            return image, example["label"]

        dataset = source.shuffle(256, seed=0).repeat().enumerate()
        dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.batch(per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return dataset_fn


# ------------------------------------------------------------------------------------- FLOPs
def graph_flops(fn, input_shape):
    """Float operations of one call of `fn` on a float32 tensor of `input_shape`, counted by
    tf.profiler on the traced graph (Conv2D, MatMul and their backprop ops; the elementwise
    ops of batch norm / ReLU have no registered FLOP count and are left out, as usual)."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    graph = tf.function(fn).get_concrete_function(tf.TensorSpec(input_shape)).graph
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return int(model_analyzer.profile(graph, options=options).total_float_ops)


def forward_backward(networks, variables):
    import tensorflow as tf

    def fn(x):
        with tf.GradientTape() as tape:
            y = x
            for net in networks:
                y = net(y, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32))
        return tape.gradient(loss, variables)
    return fn


def forward(networks):
    def fn(x):
        y = x
        for net in networks:
            y = net(y, training=True)
        return y
    return fn


def flop_counts(relicv2, supervised, config):
    """Per-image FLOPs of each piece of both steps and the multiple (see FORMULA)."""
    large, small = config.data.image_size, config.data.small_image_size
    num_large, num_small = config.data.num_large_views, config.data.num_small_views
    online = [relicv2.online_encoder, relicv2.online_projector, relicv2.online_predictor]
    target = [relicv2.target_encoder, relicv2.target_projector]
    encoder = [relicv2.online_encoder]
    online_vars = relicv2.online_variables()
    counts = {
        "F_online_large": graph_flops(forward(online), [1, large, large, 3]),
        "FB_online_large": graph_flops(forward_backward(online, online_vars),
                                       [1, large, large, 3]),
        "F_target_large": graph_flops(forward(target), [1, large, large, 3]),
        "FB_online_small": (graph_flops(forward_backward(online, online_vars),
                                        [1, small, small, 3]) if num_small else 0),
        "F_encoder_large": graph_flops(forward(encoder), [1, large, large, 3]),
        "FB_encoder_large": graph_flops(
            forward_backward(encoder, relicv2.online_encoder.trainable_weights),
            [1, large, large, 3]),
        "FB_supervised_large": graph_flops(
            forward_backward([supervised], supervised.trainable_weights), [1, large, large, 3]),
    }
    relicv2_per_image = (num_large * counts["FB_online_large"]
                         + num_large * counts["F_target_large"]
                         + num_small * counts["FB_online_small"])
    fb_over_f = counts["FB_encoder_large"] / counts["F_encoder_large"]
    area = (small / large) ** 2
    return {
        "per_image": counts,
        "relicv2_per_image": relicv2_per_image,
        "fwd_bwd_over_fwd_encoder": fb_over_f,
        "flop_multiple": relicv2_per_image / counts["FB_supervised_large"],
        # The encoder-only estimate with the measured FB/F ratio and the area ratio.
        "flop_multiple_encoder_only": (num_large * fb_over_f + num_large
                                       + num_small * fb_over_f * area) / fb_over_f,
        "small_over_large_area": area,
        "formula": FORMULA,
    }


# ------------------------------------------------------------------------------------ timing
def run_steps(model, iterator, steps):
    """`steps` train steps through Keras' own compiled train function; returns the loss."""
    logs = None
    for _ in range(max(1, steps // model.steps_per_execution)):
        logs = model.train_function(iterator)
    return float(logs["loss"])  # waits for the device


def tracing_counts(train_function):
    """experimental_get_tracing_count() of every tf.function reachable from Keras' train
    function (its closure cells): 1 each means no retracing."""
    import tensorflow as tf

    found, stack, seen = {}, [train_function], set()
    while stack:
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        if isinstance(fn, tf.types.experimental.PolymorphicFunction):
            found[fn.__name__ if hasattr(fn, "__name__") else str(fn)] = \
                fn.experimental_get_tracing_count()
            stack.append(fn.python_function)
            continue
        wrapped = getattr(fn, "__wrapped__", None)
        if wrapped is not None:
            stack.append(wrapped)
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            if callable(value) and not isinstance(value, type):
                stack.append(value)
    return found


def profile(models, iterators, steps, logdir, top):
    """tf.profiler trace of `steps` steps of each model; returns the top ops by self time."""
    import tensorflow as tf

    summaries = {}
    for name in models:
        path = os.path.join(logdir, name)
        tf.profiler.experimental.start(path)
        run_steps(models[name], iterators[name], steps)
        tf.profiler.experimental.stop()
        summaries[name] = top_ops(path, top)
    return summaries


def top_ops(logdir, top):
    """Top TensorFlow op types by total self time in a trace directory (framework_op_stats)."""
    import glob

    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    paths = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")))
    if not paths:
        return {"error": f"no trace under {logdir}"}
    raw, ok = plugin.xspace_to_tools_data(paths[-1:], "framework_op_stats", {})
    if not ok:
        return {"error": "framework_op_stats conversion failed"}
    table = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    return summarise_op_table(table, top)


def step_phase(op_name: str) -> str:
    """Which part of the train step a TF op belongs to, from its graph name."""
    if "gradient_tape/" in op_name:
        return "backward"
    if "lars/" in op_name or "loss_scale" in op_name:
        return "optimizer"
    if "target_" in op_name:
        return "target_forward"
    if "online_" in op_name or "encoder" in op_name or "classifier" in op_name:
        return "online_forward"
    return "other (loss, EMA, gather, metrics, input)"


def summarise_op_table(table, top):
    """framework_op_stats (a Google DataTable, or a list of them) -> op types by self time,
    and the share of each phase of the step (`step_phase`)."""
    if isinstance(table, list):
        table = table[0]
    columns = [c["id"] for c in table["cols"]]
    rows = [[cell["v"] if cell else None for cell in row["c"]] for row in table["rows"]]
    records = [dict(zip(columns, row)) for row in rows]
    host = [r for r in records if r.get("host_or_device") == "Host"] or records
    host = [r for r in host if r.get("type") != "IDLE"]  # waiting, not an op
    by_type, phases = {}, {}
    for r in host:
        phase = step_phase(r.get("operation") or "")
        phases[phase] = phases.get(phase, 0.0) + float(r.get("total_self_time") or 0.0)
        name = r.get("type") or r.get("operation")
        entry = by_type.setdefault(name, {"self_time_us": 0.0, "occurrences": 0})
        entry["self_time_us"] += float(r.get("total_self_time") or 0.0)
        entry["occurrences"] += int(r.get("occurrences") or 0)
    total = sum(v["self_time_us"] for v in by_type.values()) or 1.0
    ranked = sorted(by_type.items(), key=lambda kv: -kv[1]["self_time_us"])[:top]
    return {"total_self_time_ms": total / 1e3,
            "phase_share": {k: round(v / total, 4)
                            for k, v in sorted(phases.items(), key=lambda kv: -kv[1])},
            "top_op_types": [{"type": k, "share": round(v["self_time_us"] / total, 4),
                              "self_time_ms": round(v["self_time_us"] / 1e3, 2),
                              "occurrences": v["occurrences"]} for k, v in ranked]}


def machine():
    model_name = ""
    try:
        with open("/proc/cpuinfo") as f:
            model_name = next((line.split(":", 1)[1].strip() for line in f
                               if line.startswith("model name")), "")
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model_name or platform.processor(),
            "load_average": list(os.getloadavg()), "python": platform.python_version()}


def main(argv=None):
    args = parse_args(argv)
    if args.pipeline and not pathlib.Path(args.data_dir).is_dir():
        print(json.dumps({"skipped": f"--pipeline needs an ImageFolder at {args.data_dir}"}))
        return 0
    from relicv2_tf import distribute

    strategy = distribute.get_strategy(args.strategy, num_cpu_replicas=args.num_cpu_replicas)
    import keras
    import tensorflow as tf

    config = make_config(args)
    if args.pipeline:
        config.data.split = "train"
    if config.training.mixed_precision:
        keras.mixed_precision.set_global_policy(config.training.mixed_precision)
    replicas = strategy.num_replicas_in_sync
    num_large = config.data.num_large_views
    supervised_batch = args.supervised_batch_size or num_large * args.batch_size
    per_replica = distribute.per_replica_batch_size(args.batch_size, strategy)
    supervised_per_replica = distribute.per_replica_batch_size(supervised_batch, strategy)

    keras.utils.set_random_seed(0)
    models = {"relicv2": build_relicv2(config, strategy),
              "supervised": build_supervised(config, strategy, args.num_classes)}
    datasets = {
        "relicv2": strategy.distribute_datasets_from_function(
            relicv2_dataset_fn(config, per_replica)),
        "supervised": strategy.distribute_datasets_from_function(
            supervised_dataset_fn(config, supervised_per_replica, args.num_classes)),
    }
    batch = {"relicv2": args.batch_size, "supervised": supervised_batch}
    iterators, compile_seconds = {}, {}
    for name, model in models.items():
        started = time.perf_counter()
        # fit() builds Keras' train function (and, for the supervised model, its compiled loss).
        model.fit(datasets[name], epochs=1, steps_per_epoch=args.steps_per_execution, verbose=0)
        compile_seconds[name] = time.perf_counter() - started
        iterators[name] = iter(datasets[name])
        run_steps(model, iterators[name], args.warmup_steps)

    seconds = {name: [] for name in models}
    order = list(models)
    for repeat in range(args.repeats):
        for name in order if repeat % 2 == 0 else order[::-1]:  # ABBA: drift hits both alike
            started = time.perf_counter()
            run_steps(models[name], iterators[name], args.steps)
            seconds[name].append(time.perf_counter() - started)

    result = {"benchmark": "train_step_throughput",
              "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                  timespec="seconds"),
              "command": "python benchmarks/train_step_throughput.py " + " ".join(
                  sys.argv[1:] if argv is None else argv),
              "machine": machine(), "tensorflow": tf.__version__, "keras": keras.__version__,
              "strategy": type(strategy).__name__, "replicas": replicas,
              "devices": [d.name for d in tf.config.list_logical_devices()],
              "input": "pipeline" if args.pipeline else "synthetic",
              "model": {"depth": args.depth, "width": args.width,
                        "image_size": config.data.image_size,
                        "small_image_size": config.data.small_image_size,
                        "views": [num_large, config.data.num_small_views],
                        "synchronized_bn": config.model.synchronized_bn,
                        "projector_hidden_dim": config.model.projector_hidden_dim,
                        "projector_output_dim": config.model.projector_output_dim},
              "jit_compile": args.jit_compile,
              "mixed_precision": args.mixed_precision or "float32",
              "steps_per_execution": args.steps_per_execution,
              "batch_size": batch, "steps_per_window": args.steps, "windows": args.repeats,
              "warmup_steps": args.warmup_steps, "compile_seconds": compile_seconds}
    for name in models:
        rates = [batch[name] * args.steps / s for s in seconds[name]]
        median = statistics.median(rates)
        result[name] = {"images_per_s": median,
                        "images_per_s_per_replica": median / replicas,
                        "images_per_s_windows": rates,
                        "spread": (max(rates) - min(rates)) / median,
                        "step_ms": 1e3 * statistics.median(seconds[name]) / args.steps,
                        "tracing_counts": tracing_counts(models[name].train_function)}
    flops = flop_counts(models["relicv2"], models["supervised"], config)
    result["flops"] = flops
    relic, sup = result["relicv2"]["images_per_s"], result["supervised"]["images_per_s"]
    result["relicv2_limit_images_per_s"] = sup / flops["flop_multiple"]
    result["limit_ratio"] = relic * flops["flop_multiple"] / sup
    # The same ratio for each interleaved window pair (its spread shows the noise).
    result["limit_ratio_windows"] = [
        (batch["relicv2"] / r) * flops["flop_multiple"] / (batch["supervised"] / s)
        for r, s in zip(seconds["relicv2"], seconds["supervised"])]
    result["target_limit_ratio"] = 0.85
    if args.profile_dir:
        result["profile"] = profile(models, iterators, args.steps, args.profile_dir,
                                    args.top_ops)
        result["profile"]["logdir"] = args.profile_dir
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
