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
    m.name = "tau"                    # family: 'tau', 'gsta' (SimVP v2) or 'incepu' (SimVP v1)
    m.in_shape = (10, 64, 64, 1)      # (T, H, W, C) of the input frames
    m.out_frames = 10                 # T', frames to predict; T' > T rolls the model out
    m.hid_S = 64                      # encoder/decoder width
    m.hid_T = 512                     # translator width
    m.N_S = 4                         # encoder (and decoder) layers; even, half of them stride 2
    m.N_T = 8                         # translator blocks
    m.spatio_kernel_enc = 3           # encoder conv kernel size
    m.spatio_kernel_dec = 3           # decoder conv kernel size
    m.mlp_ratio = 8.0                 # MixMlp hidden width / block width (TAU, gSTA)
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
    config.optim.weight_decay = 0.0    # decoupled weight decay (0 in every OpenSTL config)
    config.optim.clip_grad = 0.0       # global-norm gradient clipping, 0 = off

    config.train = ml_collections.ConfigDict()
    config.train.epochs = 200          # OpenSTL's default epoch count
    config.train.seed = 42             # OpenSTL's default seed
    config.lock()  # a mistyped field in a config file or an override is an error
    return config


def load_config_file(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """`get_config()` of a config file such as configs/mmnist/tau.py."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file {path} does not exist; see configs/ for the shipped ones.")
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
    m.scheduled_sampling = 1          # standard schedule: 0 = always feed own predictions
    m.sampling_stop_iter = 50000      # standard schedule: iteration at which eta reaches 0
    m.sampling_changing_rate = 2e-5   # standard schedule: eta decrease per iteration
    m.r_sampling_step_1 = 25000       # reverse schedule: iteration where both probabilities leave 0.5
    m.r_sampling_step_2 = 50000       # reverse schedule: iteration where r_eta = 1 and eta = 0
    m.r_exp_alpha = 5000              # reverse schedule: time constant of r_eta's exponential rise
    m.dtype = "float32"               # compute dtype: 'float32', 'bfloat16', 'float64' (needs x64)
    m.param_dtype = "float32"         # parameter storage dtype
    return m
