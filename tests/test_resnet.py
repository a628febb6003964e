"""ResNet encoders and heads: structure, parameter counts against the paper, initialisation."""

import numpy as np
import pytest

from relicv2_tf.models import heads, resnet


def analytic_param_count(depth, width):
    """Parameters of the torso from its definition (convs without bias, BN gamma+beta), written
    independently of the Keras model."""
    blocks, bottleneck = resnet.RESNET_BLOCKS[depth]
    stem = int(64 * width)
    total = 7 * 7 * 3 * stem + 2 * stem
    in_ch = stem
    for g, (n, out_ch) in enumerate(zip(blocks, resnet.group_channels(depth, width))):
        for b in range(n):
            if b == 0 and (bottleneck or g > 0):
                total += in_ch * out_ch + 2 * out_ch
            if bottleneck:
                mid = out_ch // 4
                total += in_ch * mid + 2 * mid + 9 * mid * mid + 2 * mid + mid * out_ch + 2 * out_ch
            else:
                total += 9 * in_ch * out_ch + 2 * out_ch + 9 * out_ch * out_ch + 2 * out_ch
            in_ch = out_ch
    return total


@pytest.mark.parametrize("depth,width", [(18, 0.25), (18, 1), (50, 1), (50, 2)])
def test_keras_count_equals_analytic(depth, width):
    model = resnet.resnet(depth, width)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == analytic_param_count(depth, width)


@pytest.mark.parametrize("depth,width,paper_millions", [
    (50, 1, 24), (50, 2, 94), (50, 4, 375), (200, 2, 250), (101, 1, 43), (152, 1, 58),
    (200, 1, 63)])
def test_paper_parameter_counts(depth, width, paper_millions):
    # Paper (Table 2 and appendix): R50 24M, R50x2 94M, R50x4 375M, R200x2 250M.
    millions = analytic_param_count(depth, width) / 1e6
    assert abs(millions - paper_millions) / paper_millions < 0.03, millions


def test_output_shapes_and_stride_32():
    model = resnet.resnet(50, 0.25)
    features = model(np.zeros((2, 64, 64, 3), np.float32))
    assert features.shape == (2, resnet.feature_dim(50, 0.25)) == (2, 512)
    last = [layer for layer in model.layers if layer.name.startswith("block_group_3")][-1]
    assert last.output.shape[1:3] == (None, None)  # any input size
    assert model.get_layer("pool").input.shape[-1] == 512


def test_224_reduces_to_7x7():
    import keras
    model = resnet.resnet(18, 0.25, input_shape=(224, 224, 3))
    inner = keras.Model(model.input, model.get_layer("pool").input)
    assert inner.output.shape[1:3] == (7, 7)


def test_last_bn_of_each_branch_zero_initialised():
    model = resnet.resnet(50, 0.25)
    last = [layer for layer in model.layers if layer.name.endswith("__batchnorm_2")]
    assert len(last) == 16
    assert all(np.all(np.asarray(layer.gamma) == 0) for layer in last)
    first = model.get_layer("block_group_0__block_0__batchnorm_0")
    assert np.all(np.asarray(first.gamma) == 1)
    plain = resnet.resnet(50, 0.25, zero_init_last_bn=False)
    assert np.all(np.asarray(plain.get_layer("block_group_0__block_0__batchnorm_2").gamma) == 1)


def test_zero_init_makes_blocks_identity_plus_shortcut():
    """With zero-init, an identity block outputs relu(input) at initialisation."""
    model = resnet.resnet(50, 0.25)
    import keras
    block_in = model.get_layer("block_group_0__block_1__conv_0").input
    block_out = model.get_layer("block_group_0__block_2__conv_0").input
    probe = keras.Model(model.input, [block_in, block_out])
    x_in, x_out = probe(np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype("float32"))
    np.testing.assert_allclose(x_out, np.maximum(x_in, 0), atol=1e-6)


def test_bn_options_and_haiku_defaults():
    model = resnet.resnet(18, 0.25, synchronized_bn=True)
    bn = model.get_layer("initial_batchnorm")
    assert bn.synchronized and bn.momentum == 0.9 and bn.epsilon == 1e-5
    conv = model.get_layer("initial_conv")
    assert conv.padding == "same" and conv.strides == (2, 2) and not conv.use_bias
    assert model.get_layer("block_group_1__block_0__conv_0").strides == (2, 2)  # basic block
    bottleneck = resnet.resnet(50, 0.25)
    assert bottleneck.get_layer("block_group_1__block_0__conv_0").strides == (1, 1)
    assert bottleneck.get_layer("block_group_1__block_0__conv_1").strides == (2, 2)  # on the 3x3


def test_invalid_arguments_are_clear():
    with pytest.raises(ValueError, match="depth"):
        resnet.resnet(42)
    with pytest.raises(ValueError, match="width_multiplier"):
        resnet.resnet(50, 0.3)


def test_mlp_shapes():
    head = heads.mlp(128, 64, 16, name="projector")
    assert head(np.zeros((3, 128), np.float32)).shape == (3, 16)
    names = [layer.name for layer in head.layers if "batchnorm" in layer.name]
    assert names == ["projector_batchnorm_0"]
