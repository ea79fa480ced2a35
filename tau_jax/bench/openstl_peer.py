"""OpenSTL's PyTorch models, timed on the same config, batch and precision as ours.

The peer is OpenSTL itself, read from a checkout the user points to (`--openstl PATH`; never
vendored). Only its model files are imported: OpenSTL's package `__init__` files pull in its
trainer (Lightning, OpenCV, ...), which a timing of the model does not need, so `openstl` and
`openstl.models` are registered as bare namespace packages first. What runs around the model is
what OpenSTL's methods do per step, written from its documented behaviour:
SimVP family: the model's T-frame passes chained up to T' frames (T' > T) or cut to T' (T' < T),
`MSE + alpha * DDR` (TAU's DDR only when alpha > 0), Adam + OneCycle stepped per batch; PredRNN
family: space-to-depth patches, a scheduled-sampling mask, the model's own loss. On CUDA cuDNN
autotuning is on (`cudnn.benchmark`), as OpenSTL's default `set_seed(deterministic=False)` sets.
Precision 'bf16' means PyTorch AMP: float16 autocast with a GradScaler on CUDA (Lightning's
'16-mixed', OpenSTL's `--fp16`), bfloat16 autocast on CPU (the only CPU autocast type).
"""

from __future__ import annotations

import importlib
import pathlib
import statistics
import sys
import time
import types

from tau_jax import models

def counterpart(model_config, path) -> tuple[str, str, tuple, dict]:
    """(module, class, args, kwargs) of OpenSTL's counterpart of `model_config` (its family
    says which), checked to exist in the checkout at `path`."""
    spec = models.family_of(model_config.name).openstl_model(model_config)
    if spec is None:
        have = [n for n in models.names()
                if models.family_of(n).openstl_model(models.default_config(n)) is not None]
        raise ValueError(f"model.name = {model_config.name!r} has no OpenSTL counterpart to "
                         f"compare with (OpenSTL has {have}).")
    module = spec[0]
    if not (pathlib.Path(path).expanduser() / "openstl" / "models" / f"{module}.py").is_file():
        raise FileNotFoundError(f"--openstl {path} is not an OpenSTL checkout (no "
                                f"openstl/models/{module}.py); clone "
                                "https://github.com/chengtan9907/OpenSTL and pass its path.")
    return spec


def import_openstl_module(path, module: str):
    """`openstl.models.<module>` from the checkout at `path`, without OpenSTL's trainer."""
    root = pathlib.Path(path).expanduser().resolve() / "openstl"
    for name, folder in (("openstl", root), ("openstl.models", root / "models")):
        package = sys.modules.get(name)
        if package is None or list(getattr(package, "__path__", [])) != [str(folder)]:
            package = types.ModuleType(name)
            package.__path__ = [str(folder)]
            sys.modules[name] = package
    return importlib.import_module(f"openstl.models.{module}")


def build_model(model_config, path):
    """OpenSTL's torch model for one of our model configs."""
    module, name, args, kwargs = counterpart(model_config, path)
    return getattr(import_openstl_module(path, module), name)(*args, **kwargs)


def ddr(pred, target, tau: float = 0.1, eps: float = 1e-12):
    """TAU's differential divergence regularisation in torch (as tau_jax.losses.ddr)."""
    import torch
    if pred.shape[1] <= 2:
        return pred.new_zeros(())
    d_pred = (pred[:, 1:] - pred[:, :-1]).flatten(2)
    d_true = (target[:, 1:] - target[:, :-1]).flatten(2)
    p = torch.softmax(d_pred / tau, dim=-1)
    q = torch.softmax(d_true / tau, dim=-1)
    return (p * torch.log(p / (q + eps) + eps)).mean()


def _patches(frames, p: int):
    """(B, T, H, W, C) -> (B, T, H/p, W/p, p*p*C), OpenSTL's reshape_patch layout."""
    b, t, h, w, c = frames.shape
    x = frames.reshape(b, t, h // p, p, w // p, p, c).permute(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, h // p, w // p, p * p * c)


class Peer:
    """One OpenSTL model with its training step and OpenSTL-style inference timing."""

    def __init__(self, config, path, precision: str, device: str | None = None):
        counterpart(config.model, path)  # a bad path or model fails before torch loads
        try:
            import torch
        except ImportError:
            raise ValueError("--openstl needs PyTorch and timm: "
                             "pip install 'tau-jax[openstl]'.") from None
        self.torch = torch
        self.config = config
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch.backends.cudnn.benchmark = self.device.type == "cuda"
        self.model = build_model(config.model, path).to(self.device)
        self.recurrent = models.family_of(config.model.name).OPENSTL_FEED == "patches"
        self.amp = precision == "bf16"
        self.amp_dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and
                                           self.device.type == "cuda")
        self.opt = torch.optim.Adam(self.model.parameters(), lr=config.optim.lr)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(self.opt, max_lr=config.optim.lr,
                                                         total_steps=10 ** 6)

    @property
    def precision(self) -> str:
        return f"amp {str(self.amp_dtype).split('.')[-1]}" if self.amp else "float32"

    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def batch(self, size: int):
        """Random inputs in the layout OpenSTL's data loaders hand its methods: (x, y) as
        contiguous (B, T, C, H, W) for SimVP; patched channels-last (B, T+T', H/p, W/p, p*p*C)
        and a scheduled-sampling mask for the recurrent models."""
        mc = self.config.model
        t, h, w, c = (int(v) for v in mc.in_shape)
        frames = self.torch.rand(size, t + mc.out_frames, c, h, w, device=self.device)
        if self.recurrent:
            return _patches(frames.permute(0, 1, 3, 4, 2), mc.patch_size).contiguous()
        return frames[:, :t].contiguous(), frames[:, t:].contiguous()

    def _mask(self, batch: int, train: bool):
        mc = self.config.model
        t, h, w, c = (int(v) for v in mc.in_shape)
        p = mc.patch_size
        length = t + mc.out_frames - 2 if mc.reverse_scheduled_sampling else mc.out_frames - 1
        fill = self.torch.ones if train else self.torch.zeros
        mask = fill(batch, length, h // p, w // p, p * p * c, device=self.device)
        if not train and mc.reverse_scheduled_sampling:
            mask[:, :t - 1] = 1.0
        return mask

    def _autocast(self):
        return self.torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def train_step(self, batch):
        """One optimiser step on a `batch()` as OpenSTL's methods run it."""
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        with self._autocast():
            if self.recurrent:
                _, loss = self.model(batch, self._mask(batch.shape[0], True))
            else:
                x, y = batch
                pred = self._simvp_predict(x)
                loss = self.torch.nn.functional.mse_loss(pred, y)
                if self.config.loss.alpha:
                    loss = loss + self.config.loss.alpha * ddr(pred.float(), y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        return loss

    def forward(self, batch):
        with self.torch.no_grad(), self._autocast():
            if self.recurrent:
                mask = self._mask(batch.shape[0], False)
                return self.model(batch, mask, return_loss=False)[0]
            return self._simvp_predict(batch[0])

    def _simvp_predict(self, x):
        """T' frames from T: one pass when T' = T, its first T' frames when T' < T, passes fed
        their predecessor's output when T' > T (OpenSTL's SimVP method)."""
        t, t_out = x.shape[1], int(self.config.model.out_frames)
        outputs, made = [], 0
        while made < t_out:
            x = self.model(x)
            outputs.append(x[:, :t_out - made])
            made += t
        return outputs[0] if len(outputs) == 1 else self.torch.cat(outputs, dim=1)

    def _sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def _repeat_timer(self, fn, warmup: int, steps: int):
        """Runs `warmup` calls of fn now; returns a callable that times one repeat of `steps`
        calls (seconds per call)."""
        for _ in range(warmup):
            fn()
        self._sync()

        def one_repeat() -> float:
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            self._sync()
            return (time.perf_counter() - start) / steps
        return one_repeat

    def train_timer(self, batch: int, warmup: int, steps: int):
        """`_repeat_timer` of the training step at `batch` (call before `infer_timer`)."""
        if self.device.type == "cuda":
            self.torch.cuda.reset_peak_memory_stats(self.device)
        train_batch = self.batch(batch)
        return self._repeat_timer(lambda: self.train_step(train_batch), warmup, steps)

    def infer_timer(self, batch: int, warmup: int, steps: int):
        """`_repeat_timer` of eval-mode forward passes at `batch` (after the training repeats)."""
        self.train_peak = self._peak()
        self.model.eval()
        infer_batch = self.batch(batch)
        return self._repeat_timer(lambda: self.forward(infer_batch), warmup, steps)

    def _peak(self):
        if self.device.type != "cuda":
            return None
        peak = self.torch.cuda.max_memory_allocated(self.device)
        self.torch.cuda.reset_peak_memory_stats(self.device)
        return int(peak)

    def report(self, batch: int, infer_batch: int, train: list, infer: list) -> dict:
        """The result of the timers' repeats: `train` and `infer` seconds per call."""
        return {
            "framework": f"torch {self.torch.__version__}",
            "device": (self.torch.cuda.get_device_name(self.device)
                       if self.device.type == "cuda" else "cpu"),
            "precision": self.precision,
            "params": self.num_params(),
            "train_step_s": train,
            "train_seq_per_s": batch / statistics.median(train),
            "infer_pass_s": infer,
            "infer_seq_per_s": infer_batch / statistics.median(infer),
            "train_peak_bytes": self.train_peak,
            "infer_peak_bytes": self._peak(),
            "threads": self.torch.get_num_threads(),
            "cudnn_benchmark": bool(self.torch.backends.cudnn.benchmark),
        }
