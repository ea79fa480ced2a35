"""The base experiment config every file under configs/ starts from.

Every field is declared here with its meaning; a config file overrides values, never adds
fields, so a mistyped override fails loudly. Defaults are OpenSTL's (reference spec section 3.1
and the SimVP_Model constructor), TAU on Moving MNIST.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib

import ml_collections


def model_config() -> ml_collections.ConfigDict:
    """The `model` section: SimVP-family fields, named as in OpenSTL."""
    m = ml_collections.ConfigDict()
    m.name = "tau"                    # 'tau', 'gsta' (SimVP v2), 'incepu' (v1), 'timesformer', 'tps'
    m.in_shape = (10, 64, 64, 1)      # (T, H, W, C) of the input frames
    m.out_frames = 10                 # T', frames to predict; T' > T rolls the model out
    m.hid_S = 64                      # encoder/decoder width
    m.hid_T = 512                     # translator width
    m.N_S = 4                         # encoder (and decoder) layers; even, half of them stride 2
    m.N_T = 8                         # translator blocks
    m.spatio_kernel_enc = 3           # encoder conv kernel size
    m.spatio_kernel_dec = 3           # decoder conv kernel size
    m.mlp_ratio = 8.0                 # MixMlp hidden width / block width (TAU, gSTA)
    m.tau_ablation = "none"           # TAU paper ablations: 'none', 'no_sa', 'no_da', 'conv_baseline'
    m.drop = 0.0                      # dropout inside MixMlp
    m.drop_path = 0.0                 # stochastic depth of the last translator block
    m.drop_path_schedule = "openstl"  # 'openstl': linspace(0.01, drop_path); 'linear': (0, drop_path)
    m.dw_impl = "auto"                # depthwise convs: 'lax' (grouped conv), 'taps', 'auto' (by backend)
    m.dtype = "float32"               # compute dtype: 'float32', 'bfloat16', 'float64' (needs x64)
    m.param_dtype = "float32"         # parameter storage dtype
    return m


def base_config() -> ml_collections.ConfigDict:
    """The whole experiment: model, data, loss, optimiser, training."""
    config = ml_collections.ConfigDict()
    config.model = model_config()

    config.data = ml_collections.ConfigDict()
    config.data.name = "moving_mnist"  # dataset builder name
    config.data.batch_size = 16        # global training batch (sequences)
    config.data.eval_batch_size = 16   # global evaluation batch (sequences)
    config.data.metrics = ("mse", "mae", "ssim", "psnr")  # OpenSTL's metric list for the dataset
    config.data.eval_split = "test"    # split evaluated during training (OpenSTL validates on test)
    config.data.data_dir = ""          # prepared datasets; '' = $TFDS_DATA_DIR or ~/tensorflow_datasets
    config.data.manual_dir = ""        # manually downloaded files; '' = <data_dir>/downloads/manual
    config.data.in_frames = 0          # T; 0 = the dataset's own (mmnist 10, taxibj 4, kth 10, ...)
    config.data.out_frames = 0         # T'; 0 = the dataset's own (mmnist 10, taxibj 4, kth 20, ...)
    config.data.mmnist_seed = 0        # moving_mnist: seed of the generated sequences
    config.data.mmnist_train_size = 10000  # moving_mnist: train sequences (OpenSTL: 10,000 an epoch)
    config.data.mmnist_test_size = 10000   # moving_mnist: generated test sequences (without the file)
    config.data.mmnist_num_digits = 2  # moving_mnist: digits per sequence
    config.data.mmnist_digits = "auto"  # moving_mnist digits: 'auto', 'idx', 'tfds', 'bundled'
    config.data.mmnist_online = False  # moving_mnist: fresh train sequences each epoch, made on access
    config.data.mmnist_online_epochs = 10000  # online: epochs of distinct sequences in the index space
    config.data.weather_variables = ("t2m",)  # weatherbench: t2m, tcc, uv10, r, t@850, ... (channels)
    config.data.weather_train_years = (2010, 2015)  # weatherbench: first and last training year
    config.data.weather_val_years = (2016, 2016)    # weatherbench: first and last validation year
    config.data.weather_test_years = (2017, 2018)   # weatherbench: first and last test year
    config.data.weather_step = 1       # weatherbench: keep every step-th hour (OpenSTL's MV: 6)
    config.data.weather_resolution = 5.625  # weatherbench: grid spacing in degrees (5.625: 32x64)
    config.data.weather_openstl_norm = False  # weatherbench: z-score val/test with own stats (OpenSTL)
    config.data.custom_path = ""       # custom: .npy/.npz, folder of image-sequence folders or videos
    config.data.custom_layout = "auto"  # custom arrays: 'NTHWC', 'NTCHW', 'auto' (error if ambiguous)
    config.data.custom_stride = 1      # custom: frames between the starts of consecutive windows
    config.data.custom_resize = (0, 0)  # custom: (H, W) to resize frames to, bilinear; (0, 0) keeps
    config.data.custom_grayscale = False  # custom images/videos: keep one (luma) channel
    config.data.custom_normalize = "auto"  # custom: 'auto' (uint8 /255, float zscore), 'none', 'zscore', 'minmax'
    config.data.custom_val_fraction = 0.0  # custom without split folders: share of sequences for val
    config.data.custom_test_fraction = 0.1  # custom without split folders: share of sequences for test

    config.loss = ml_collections.ConfigDict()
    config.loss.alpha = 0.1            # weight of TAU's DDR term (0 = plain MSE, SimVP)
    config.loss.ddr_tau = 0.1          # softmax temperature of DDR

    config.optim = ml_collections.ConfigDict()
    config.optim.optimizer = "adam"    # OpenSTL's default optimiser
    config.optim.lr = 1e-3             # peak learning rate
    config.optim.sched = "onecycle"    # 'onecycle' (per step, beta1 cycled) or 'cosine' (per epoch)
    config.optim.warmup_epoch = 0      # cosine only: linear warm-up epochs from warmup_lr
    config.optim.warmup_lr = 1e-5      # cosine only: learning rate at the start of warm-up
    config.optim.min_lr = 1e-6         # cosine only: final learning rate
    config.optim.weight_decay = 0.0    # adam: L2 added to the gradient (PyTorch Adam); adamw: decoupled; 0 in OpenSTL
    config.optim.clip_grad = 0.0       # global-norm gradient clipping, 0 = off
    config.optim.eps = 1e-8            # Adam epsilon (OpenSTL opt_eps None -> 1e-8)
    config.optim.betas = (0.9, 0.999)  # Adam (beta1, beta2); onecycle cycles beta1 0.95-0.85 instead
    config.optim.final_div_factor = 1e4  # onecycle: final lr = lr / 25 / final_div_factor (OpenSTL)
    config.optim.ema_decay = 0.0       # EMA of the params (decay*ema + (1-decay)*params), 0 = off

    config.train = ml_collections.ConfigDict()
    config.train.epochs = 200          # OpenSTL's default epoch count
    config.train.seed = 42             # OpenSTL's default seed
    config.train.max_steps = 0         # stop after this many steps; 0 = epochs x steps per epoch
    config.train.mesh = (-1, 1)        # device mesh (data, fsdp); -1 = all remaining devices
    config.train.log_every_steps = 50  # train metrics to console and TensorBoard every N steps
    config.train.eval_every_steps = 0  # evaluate every N steps; 0 = once per epoch
    config.train.checkpoint_every_steps = 0  # checkpoint every N steps; 0 = at each evaluation
    config.train.keep_checkpoints = 3  # newest checkpoints kept (the best by val MSE is kept too)
    config.train.num_samples = 4       # sequences drawn in the PNG/GIF written at each evaluation
    config.lock()  # a mistyped field in a config file or an override is an error
    return config


def load_config_file(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """`get_config()` of a config file such as configs/mmnist/tau.py."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file {path} does not exist; see configs/ for the shipped ones.")
    if path.suffix != ".py":
        raise ValueError(f"Config file {path} is not a Python file (.py) with get_config().")
    spec = importlib.util.spec_from_file_location(f"tau_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"Config file {path} defines no get_config().")
    return module.get_config()


def recurrent_model_config(name: str = "predrnn") -> ml_collections.ConfigDict:
    """The `model` section for the recurrent family ('predrnn', 'predrnnv2', 'convlstm'), named as
    in OpenSTL; defaults are OpenSTL's Moving MNIST configs (reference spec 6.3-6.7)."""
    m = ml_collections.ConfigDict()
    m.name = name                     # family: 'predrnn', 'predrnnv2' (decoupling loss) or 'convlstm'
    m.in_shape = (10, 64, 64, 1)      # (T, H, W, C) of the input frames
    m.out_frames = 10                 # T', frames to predict (the model unrolls T+T'-1 steps)
    m.num_hidden = (128,) * 4          # width per layer (one width for predrnn/predrnnv2)
    m.filter_size = 5                 # cell conv kernel size (odd)
    m.stride = 1                      # cell conv stride (OpenSTL only works with 1)
    m.patch_size = 4                  # space-to-depth patch: frames become (H/p, W/p, p*p*C)
    m.layer_norm = 0                  # 1 = LayerNorm over (H/p, W/p, channels) after each gate conv
    m.reverse_scheduled_sampling = int(name == "predrnnv2")  # 1 = reverse sched. sampling
    m.decouple_beta = 0.1             # predrnnv2: weight of the memory-decoupling loss
    m.remat = False                   # recompute each time step in the backward pass: less memory, more time
    m.scheduled_sampling = 1          # standard schedule: 0 = always feed own predictions
    m.sampling_stop_iter = 50000      # standard schedule: iteration at which eta reaches 0
    m.sampling_changing_rate = 2e-5   # standard schedule: eta decrease per iteration
    m.r_sampling_step_1 = 25000       # reverse schedule: iteration where both probabilities leave 0.5
    m.r_sampling_step_2 = 50000       # reverse schedule: iteration where r_eta = 1 and eta = 0
    m.r_exp_alpha = 5000              # reverse schedule: time constant of r_eta's exponential rise
    m.dtype = "float32"               # compute dtype: 'float32', 'bfloat16', 'float64' (needs x64)
    m.param_dtype = "float32"         # parameter storage dtype
    return m


ATTENTION_MODELS = ("timesformer", "tps")


def attention_model_config(name: str = "timesformer") -> ml_collections.ConfigDict:
    """The `model` section for the attention translators in the SimVP frame ('timesformer',
    'tps'): model_config() plus their fields. Width is hid_T, depth N_T; defaults follow
    ViT/Swin (MLP ratio 4, linear stochastic-depth schedule) at Moving MNIST sizes."""
    if name not in ATTENTION_MODELS:
        raise ValueError(f"attention_model_config: name must be one of {ATTENTION_MODELS}, "
                         f"got {name!r}.")
    m = model_config()
    m.name = name
    m.hid_T = 256                     # token width D
    m.mlp_ratio = 4.0                 # MLP hidden width / token width (ViT, Swin)
    m.drop_path_schedule = "linear"   # as TimeSformer and Swin: linspace(0, drop_path) over blocks
    m.num_heads = 8                   # attention heads; must divide hid_T
    m.latent_patch = 1                # side of the latent-map patches that become tokens
    m.attention_mode = "divided"      # timesformer: 'divided' (time then space), 'joint', 'space'
    m.window_size = 8                 # tps: attention window side on the token grid; must divide it
    m.shift_ratio = 1.0               # tps: fraction of heads moved by the temporal patch shift
    m.channel_shift_ratio = 0.125     # tps: fraction of each head's channels shifted each way
    m.relative_bias = "3d"            # tps: '3d' (paper; t-aware, per frame) or '2d' (parameter-free)
    return m


def attention_base_config(name: str = "timesformer") -> ml_collections.ConfigDict:
    """base_config() with attention_model_config(name) as its (locked) model section."""
    config = base_config()
    config.model = attention_model_config(name)
    config.model.lock()
    return config


def recurrent_base_config(name: str = "predrnn") -> ml_collections.ConfigDict:
    """base_config() with recurrent_model_config(name) as its (locked) model section. The
    `loss` section (TAU's DDR) is not used by this family: its loss is the model's own."""
    config = base_config()
    config.model = recurrent_model_config(name)
    config.model.lock()
    return config


def default_model_config(name: str) -> ml_collections.ConfigDict:
    """The defaults of the `model` section for model family `name`."""
    if name in ATTENTION_MODELS:
        return attention_model_config(name)
    if name in ("predrnn", "predrnnv2", "convlstm"):
        return recurrent_model_config(name)
    return model_config()
