"""relicv2_tf: ReLICv2 and background-invariant self-supervised pretraining (TensorFlow/Keras 3)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def requirements(name):
    lines = (HERE / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


# console script -> relicv2_tf.cli.<module>:run, the one entry-point name of every CLI module
# (tests/test_cli_convention.py)
ENTRY_POINTS = {
    "relicv2-pretrain": "relicv2_tf.cli.pretrain:run",
    "relicv2-export": "relicv2_tf.cli.export:run",
    "relicv2-client": "relicv2_tf.cli.serving_client:run",
    "relicv2-import": "relicv2_tf.cli.import_checkpoint:run",
    "relicv2-eval": "relicv2_tf.cli.eval:run",  # relicv2-eval <protocol>; the next six alias it
    "relicv2-linear-eval": "relicv2_tf.cli.linear_eval:run",
    "relicv2-finetune": "relicv2_tf.cli.finetune:run",
    "relicv2-transfer": "relicv2_tf.cli.transfer:run",
    "relicv2-robustness": "relicv2_tf.cli.robustness:run",
    "relicv2-backgrounds": "relicv2_tf.cli.backgrounds:run",
    "relicv2-supervised": "relicv2_tf.cli.supervised:run",
    "relicv2-analysis": "relicv2_tf.cli.analysis:run",
    "relicv2-saliency": "relicv2_tf.cli.saliency:run",
}

setup(
    name="relicv2_tf",
    version="0.1.0",
    description=("ReLICv2 self-supervised ResNet pretraining with background invariance "
                 "(TF/Keras 3)"),
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["relicv2_tf", "relicv2_tf.*", "experiments", "experiments.*"]),
    install_requires=requirements("requirements.txt"),
    extras_require={"test": [r for r in requirements("requirements-test.txt")
                             if not r.startswith("-r")],
                    "serving": requirements("requirements-serving.txt"),
                    "beam": requirements("requirements-beam.txt")},
    entry_points={"console_scripts": [f"{k}={v}" for k, v in ENTRY_POINTS.items()]},
    license="Apache-2.0",
)
