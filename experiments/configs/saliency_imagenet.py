"""ReLICv2's unsupervised saliency pipeline on ImageNet (paper section 2.2, appendix F.2.1).

    relicv2-saliency --config=experiments/configs/saliency_imagenet.py --stage=priors \
        --config.data.data_dir=/data/imagenet/train --config.workdir=/runs/saliency
    (then --stage=refine, --stage=generate, --stage=evaluate)

The extracted paper text lost most numbers of appendix F.2.1; it says "the remaining
hyperparameters are set in the same way as they are in the original DeepUSPS code". Every value
below is labelled:
  (paper)          quoted from the surviving text: three self-training rounds ("three
                   self-supervised iterations"), the learning rate "doubled during each
                   iteration", Adam, a self-supervised ResNet-50 2x backbone, the four priors;
  (DeepUSPS code)  github.com/donnydonnyullrich/DeepUSPS at commit f520d3a, read through the
                   project's code search; each comment names the file and function and quotes
                   the line (the search returns file text without line numbers, so the quoted
                   line is the reference: grep for it). Where the paper's own number was lost
                   (stage-1 epochs and start rate, stage-2 epochs and rate, batch size, Adam
                   momentum) the code's value is the fallback;
  (inferred)       deduced from the code where the deciding file is not published (DataClass.py,
                   which holds the loss and the target discretisation) or from the paper's
                   wording;
  (assumed)        our choice where neither says anything.
What the DeepUSPS code does that is not reproduced: the poly learning-rate decay
(utils.py adjust_learning_rate: "lr = args.lr * (1 - epoch / args.epochs) ** 0.9"; here the
rate is constant within a round), the per-method binarisation thresholds of the first round
(DeepUSPS.py train_unsupervised: MC 0.31, HS 0.36, DSR 0.23, RBD 0.25 for MSRA-B's maps, 0.5
from round 2; here stage-1 targets stay soft), and the dense CRF (pydensecrf) applied to every
prediction before it enters the moving average (Par_CRF.py) and at test time; the moving average
here folds in inference-mode predictions after each epoch, starting from the first epoch's
(DeepUSPS: training-mode predictions of the epoch, starting from zeros). The code's stage-1
rates are [1e-6, 2e-6, 5e-6]; the paper's doubling (1e-6, 2e-6, 4e-6) is kept.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # (assumed)
    config.workdir = "/tmp/relicv2_saliency"  # priors.npz, refined.npz, saliency_network/, ...

    data = config.data = ml_collections.ConfigDict()
    data.data_dir = ""  # ImageFolder root of the training split (the subset is drawn from it)
    # (inferred) paper: "a randomly selected subset ... of the same size" as DeepUSPS' MSRA-B
    # training set; DeepUSPS.py train(): "# the order is kept correctly, 0...2499"
    data.subset_size = 2500
    # (DeepUSPS code) utils.py parse_args: "parser.add_argument('-s', '--crop-size',
    # default=432, type=int)", rounded up to 448, a multiple of 32 (the decoder's strides)
    data.image_size = 448

    priors = config.priors = ml_collections.ConfigDict()
    priors.names = ("rbd", "mr", "dsr", "mc")  # (paper) RBD, MR, DSR and MC
    priors.n_segments = 200  # (assumed) SLIC superpixels, as in the MR / MC papers
    priors.compactness = 20.0  # (assumed) as in the released MR / RBD / DSR code
    priors.num_workers = 2  # processes for the priors stage

    network = config.network = ml_collections.ConfigDict()
    network.encoder_dir = ""  # self-supervised encoder directory (models.encoder_io); required
    network.allow_random_init = False  # True only for tests / demos without an encoder
    network.depth = 50  # (paper) "ResNet50 2x" (used only with allow_random_init)
    network.width_multiplier = 2.0  # (paper)
    network.decoder_channels = 128  # (assumed) DeepUSPS' DRN head is a 1x1 conv + upsampling

    refine = config.refine = ml_collections.ConfigDict()  # stage 1 (pseudo-label networks)
    refine.rounds = 3  # (paper) "three self-supervised iterations"
    # (DeepUSPS code) DeepUSPS.py train_unsupervised: "args.epochs = 25"
    refine.epochs_per_round = 25
    # (DeepUSPS code) DeepUSPS.py train_unsupervised:
    # "learning_rates_refinement = [1e-6, 2e-6, 5e-6]" (the start value)
    refine.learning_rate = 1e-6
    refine.learning_rate_growth = 2.0  # (paper) "doubled during each iteration"
    # (DeepUSPS code) utils.py parse_args: "parser.add_argument('--batch-size', type=int,
    # default=10" ("args.iter_size = min(1, ...)" = 1: no gradient accumulation)
    refine.batch_size = 10
    # (DeepUSPS code) DeepUSPS.py train_round: "torch.optim.Adam(single_model.optim_parameters(),
    # lr=args.lr)", PyTorch's default betas (0.9, 0.999); the paper's number was lost
    refine.adam_beta_1 = 0.9
    # (DeepUSPS code) Par_CRF.py CRFDataset.__getitem__: "alpha = 0.7",
    # "c_sal_pred_MVA = alpha*c_sal_pred_MVA +(1-alpha) * sal_pred_dcrf"
    refine.prediction_ema = 0.7
    # (DeepUSPS code) DeepUSPS.py train_round: every round builds a fresh
    # "single_model = DRNSeg(args.arch, 2, None, pretrained=True)" from the pretrained weights
    refine.reset_each_round = True
    refine.flip = True  # (assumed) DeepUSPS' data_transforms.py is not in the repository
    # (inferred) DataClass.py (compute_loss) is not published; utils.py parse_args:
    # "parser.add_argument('--beta', type=float, default=1.0, help='beta_sq for continuous
    # F-measure')" and utils.py F_cont (1 - continuous F-measure) is the loss it parameterises
    refine.loss = "f_measure"
    refine.f_beta_squared = 1.0  # (DeepUSPS code) DeepUSPS.py train_unsupervised: "args.beta = 1.0"
    # True: every stage-1 network after every round -> <workdir>/stages/<prior>_round<r>/, to
    # score each stage on the dev set (benchmarks/saliency_quality.py --stages_dir)
    refine.save_stage_networks = False

    final = config.final = ml_collections.ConfigDict()  # stage 2 (saliency network)
    # (DeepUSPS code) DeepUSPS.py train_unsupervised, phase II: "args.epochs = 200"
    final.epochs = 200
    final.learning_rate = 1e-4  # (DeepUSPS code) same place: "args.lr = 1e-4"
    # (DeepUSPS code) same place: "train_round(args, target_dirs_refined, phase_2_directory,
    # 0.5, MapsOut = False)": targets discretised at 0.5. DeepUSPS binarises each refined map
    # and averages the per-map losses; here the mean of the refined maps is binarised
    final.fusion_threshold = 0.5
    final.loss = "f_measure"  # (inferred) as refine.loss
    final.f_beta_squared = 4.0  # (DeepUSPS code) same place: "args.beta = 4.0"

    generate = config.generate = ml_collections.ConfigDict()
    # (paper) "The saliency detection network is then used to compute the saliency masks";
    # "fused_priors": the mean of the four priors on each image, no network
    generate.source = "network"
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
