"""The base experiment config every file under configs/ starts from.

Every field is declared here with its meaning (the `model` section by the model's family); a
config file overrides values, never adds fields, so a mistyped override fails loudly. Defaults
are OpenSTL's, TAU on Moving MNIST; code reads declared fields directly and repeats no default.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib

import ml_collections

from tau_jax import models


def default_model_config(name: str) -> ml_collections.ConfigDict:
    """The defaults of the `model` section of model `name`, declared by its family
    (tau_jax/models/simvp.py, tau_jax/models/recurrent/)."""
    return models.default_config(name)


def base_config(model: str = "tau") -> ml_collections.ConfigDict:
    """The whole experiment for model `model`: model, data, loss, optimiser, training."""
    config = ml_collections.ConfigDict()
    config.model = default_model_config(model)

    config.data = ml_collections.ConfigDict()
    config.data.name = "moving_mnist"  # dataset builder name
    config.data.batch_size = 16        # global training batch (sequences)
    config.data.eval_batch_size = 16   # global evaluation batch (sequences)
    config.data.metrics = ()           # () = the dataset's OpenSTL list (video: mse mae ssim psnr,
    #                                    weather: mse rmse mae); or any of mse mae rmse ssim psnr
    config.data.spatial_norm = "auto"  # MSE/MAE of a frame: 'sum' of its values (video), 'mean'
    #                                    (weather), 'auto' = the dataset's convention
    config.data.clip_range = ()        # predictions clipped to (low, high) before SSIM/PSNR;
    #                                    () = the dataset's ((0, 1), as OpenSTL)
    config.data.eval_split = "test"    # split evaluated during training (OpenSTL validates on test)
    config.data.data_dir = ""          # prepared datasets; '' = $TFDS_DATA_DIR or ~/tensorflow_datasets
    config.data.manual_dir = ""        # manually downloaded files; '' = <data_dir>/downloads/manual
    config.data.frame_padding = "auto"  # frames the model's strides or patches do not divide are
    #                                    padded around every model call and cropped after it:
    #                                    'auto' = global lat-lon grids wrap longitude and fold
    #                                    latitude across the poles, others 'edge'; or 'edge',
    #                                    'reflect', 'zeros' (tau_jax/models/framing.py)
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
    config.data.weather_zarr = ""      # weatherbench: a WeatherBench2 zarr store (path or gs://)
    #                                    read instead of the NetCDF files (weatherbench2.py)
    config.data.weather_openstl_norm = False  # weatherbench: z-score val/test with own stats (OpenSTL)
    config.data.custom_path = ""       # custom: .npy/.npz, folder of image-sequence folders or videos
    config.data.custom_layout = "auto"  # custom arrays: 'NTHWC', 'NTCHW', 'auto' (error if ambiguous)
    config.data.custom_stride = 1      # custom: frames between the starts of consecutive windows
    config.data.custom_resize = (0, 0)  # custom: (H, W) to resize frames to, bilinear; (0, 0) keeps
    config.data.custom_grayscale = False  # custom images/videos: keep one (luma) channel
    config.data.custom_normalize = "auto"  # custom: 'auto' (uint8 /255, float zscore), 'none',
    #                                        'zscore', 'minmax'
    config.data.custom_val_fraction = 0.0  # custom without split folders: share of sequences for val
    config.data.custom_test_fraction = 0.1  # custom without split folders: share of sequences for test

    config.loss = ml_collections.ConfigDict()  # the SimVP family's loss; recurrent models have their own
    config.loss.alpha = 0.1            # weight of TAU's DDR term (0 = plain MSE, SimVP)
    config.loss.ddr_tau = 0.1          # softmax temperature of DDR

    config.optim = ml_collections.ConfigDict()
    config.optim.optimizer = "adam"    # OpenSTL's default optimiser
    config.optim.lr = 1e-3             # peak learning rate
    config.optim.sched = "onecycle"    # 'onecycle' (per step, beta1 cycled) or 'cosine' (per epoch)
    config.optim.warmup_epoch = 0      # cosine only: linear warm-up epochs from warmup_lr
    config.optim.warmup_lr = 1e-5      # cosine only: learning rate at the start of warm-up
    config.optim.min_lr = 1e-6         # cosine only: final learning rate
    config.optim.weight_decay = 0.0    # adam: L2 added to the gradient (PyTorch Adam); adamw:
    #                                    decoupled; 0 in OpenSTL
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
    """`get_config()` of a config file such as configs/mmnist/tau.py; `FILE.py:ARG` calls
    `get_config(ARG)`, as `--config FILE.py:ARG` does (configs/weather/t2m_5_625.py:tps)."""
    path, _, arg = str(path).partition(".py:")
    path = pathlib.Path(path if path.endswith(".py") or not arg else path + ".py")
    if not path.is_file():
        raise FileNotFoundError(f"Config file {path} does not exist; see configs/ for the shipped ones.")
    if path.suffix != ".py":
        raise ValueError(f"Config file {path} is not a Python file (.py) with get_config().")
    spec = importlib.util.spec_from_file_location(f"tau_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"Config file {path} defines no get_config().")
    return module.get_config(arg) if arg else module.get_config()
