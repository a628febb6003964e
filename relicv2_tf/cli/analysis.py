"""`relicv2-analysis`: class concentration (Figure 4) and nearest-neighbour confusion (appendix C)
of several encoders (`relicv2_tf.evaluation.analysis.run`).

  relicv2-analysis --config=experiments/configs/linear_eval_imagenette.py \\
      --encoders=relicv2=runs/demo/encoder,supervised=runs/sup/encoder \\
      --output_dir=runs/analysis

Uses the data section, `test_split` and the linear config's image / resize sizes of any linear-eval
config. Writes class_concentration.png, nn_confusion_<name>.png and analysis.json (mean ratio and
nearest-neighbour label agreement per encoder).
"""

from absl import flags

from relicv2_tf.cli import common

COMMAND = "analysis"
EXAMPLE_CONFIG = "experiments/configs/linear_eval_imagenette.py"


def define_flags():
    return {
        **common.define_protocol_flags(EXAMPLE_CONFIG),
        "encoders": flags.DEFINE_string(
            "encoders", None, "Comma-separated name=encoder_dir pairs to compare "
            "(name=random for a random-init encoder of config.model)."),
        "classes": flags.DEFINE_list("classes", ["0", "1", "2", "3"],
                                     "Class indices shown in the nearest-neighbour figure."),
        "per_class": flags.DEFINE_integer("per_class", 50,
                                          "Images per class in the neighbour figure."),
        "num_neighbours": flags.DEFINE_integer("num_neighbours", 5,
                                               "Nearest neighbours per image."),
    }


def parse_encoders(value: str) -> dict:
    """`name=encoder_dir,name=random,...` -> {name: encoder_dir or "random"}."""
    pairs = {}
    for item in [v for v in (value or "").split(",") if v.strip()]:
        if "=" not in item:
            common.fail(COMMAND, f"--encoders item {item!r} is not name=encoder_dir.")
        name, path = item.split("=", 1)
        pairs[name.strip()] = path.strip()
    if not pairs:
        common.fail(COMMAND, "--encoders needs at least one name=encoder_dir pair.")
    return pairs


def main(flag_values, argv):
    common.reject_arguments(COMMAND, argv[1:])
    classes = flag_values["classes"].value
    try:
        class_indices = [int(c) for c in classes]
    except ValueError:
        common.fail(COMMAND, f"--classes={','.join(classes)} is not a list of class indices.")
    common.run_protocol(COMMAND, "analysis", flag_values,
                        encoders=parse_encoders(flag_values["encoders"].value),
                        classes=class_indices, per_class=flag_values["per_class"].value,
                        num_neighbours=flag_values["num_neighbours"].value)


def run():
    flag_values = define_flags()
    common.run_app(COMMAND, lambda argv: main(flag_values, argv), __doc__,
                   config_example=EXAMPLE_CONFIG)


if __name__ == "__main__":
    run()
