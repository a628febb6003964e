"""ReLICv2's unsupervised saliency pipeline on ImageNet (paper section 2.2, appendix F.2.1).

    relicv2-saliency --config=experiments/configs/saliency_imagenet.py --stage=priors \
        --config.data.data_dir=/data/imagenet/train --config.workdir=/runs/saliency
    (then --stage=refine, --stage=generate, --stage=evaluate)

The extracted paper text lost most numbers of appendix F.2.1. Which values are recovered:
  * from the surviving text: three self-training rounds ("three self-supervised iterations"),
    learning rate doubled each round, Adam, a ResNet-50 2x self-supervised backbone, all four
    priors (RBD, MR, DSR, MC);
  * recovered by inference: subset size 2,500 ("a random subset of ImageNet of the same size"
    as DeepUSPS' MSRA-B training set, which has 2,500 images);
  * from DeepUSPS / its released code, as the paper says "the remaining hyperparameters are set
    as in the original DeepUSPS code": 25 epochs per round, learning rate starting at 1e-6;
    image size 432 there, rounded here to 448 because the decoder needs a multiple of 32;
  * not recoverable (our choice, marked "assumed"): stage-2 epochs / learning rate (taken equal
    to stage 1), Adam beta_1 0.9 ("momentum set to ..." lost its number), batch size 10,
    the moving-average rate of the predictions, soft (not thresholded) fusion.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.workdir = "/tmp/relicv2_saliency"  # priors.npz, refined.npz, saliency_network/, ...

    data = config.data = ml_collections.ConfigDict()
    data.data_dir = ""  # ImageFolder root of the training split (the subset is drawn from it)
    data.subset_size = 2500  # recovered by inference (MSRA-B train size)
    data.image_size = 448  # DeepUSPS 432, rounded up to a multiple of 32

    priors = config.priors = ml_collections.ConfigDict()
    priors.names = ("rbd", "mr", "dsr", "mc")  # paper
    priors.n_segments = 200  # SLIC superpixels (MR / MC papers: 200)
    priors.compactness = 20.0  # the released MR / RBD / DSR code
    priors.num_workers = 2  # processes for the priors stage

    network = config.network = ml_collections.ConfigDict()
    network.encoder_dir = ""  # self-supervised encoder directory (models.encoder_io); required
    network.allow_random_init = False  # True only for tests / demos without an encoder
    network.depth = 50  # paper: ResNet-50 2x (used only with allow_random_init)
    network.width_multiplier = 2.0
    network.decoder_channels = 128

    refine = config.refine = ml_collections.ConfigDict()  # stage 1 (pseudo-label networks)
    refine.rounds = 3  # paper text
    refine.epochs_per_round = 25  # DeepUSPS
    refine.learning_rate = 1e-6  # DeepUSPS start value
    refine.learning_rate_growth = 2.0  # paper text: doubled each round
    refine.batch_size = 10  # assumed
    refine.adam_beta_1 = 0.9  # assumed ("momentum set to" lost its number)
    refine.prediction_ema = 0.7  # assumed: moving average of predictions across epochs
    refine.reset_each_round = False  # keep training the same network across rounds
    refine.flip = True

    final = config.final = ml_collections.ConfigDict()  # stage 2 (saliency network)
    final.epochs = 25  # assumed equal to stage 1
    final.learning_rate = 1e-6  # assumed equal to stage 1
    final.fusion_threshold = -1.0  # < 0: soft mean of the refined maps; else binarise

    generate = config.generate = ml_collections.ConfigDict()
    generate.data_root = ""  # dataset root holding the splits below (ImageFolder each)
    generate.splits = ("train",)
    generate.num_examples = 0  # > 0: only that many evenly spaced images per split (smoke runs)
    generate.output_dir = ""  # shards go to <output_dir>/<split>-xxxxx-of-yyyyy.tfrecord
    generate.num_shards = 1024
    generate.num_workers = 1
    generate.worker_index = 0
    generate.batch_size = 32
    generate.figure_path = ""  # "" -> <workdir>/saliency_samples.png
    generate.figure_samples = 4

    evaluate = config.evaluate = ml_collections.ConfigDict()
    evaluate.data_dir = ""  # ImageFolder with class folders (labels used only to score)
    evaluate.num_images = 1000
    evaluate.image_size = 128
    evaluate.train_fraction = 0.5
    evaluate.encoder_dir = ""  # features for the check; "" = colour/texture histograms
    evaluate.threshold_factor = 1.0  # foreground = map >= factor x its mean (2.0: F-beta's)
    return config
