"""Evaluation: OpenSTL's metrics over a whole split, the copy-last-frame baseline beside them,
the pictures of an evaluation, and `evaluate(workdir)` of a saved checkpoint."""

from __future__ import annotations

import os
import pathlib

import jax
import numpy as np
from jax.experimental import multihost_utils

from tau_jax import data, models, visualize
from tau_jax.data.pipeline import eval_batches
from tau_jax.metrics import MetricAccumulator
from tau_jax.models.framing import EDGE
from tau_jax.weather_metrics import WeatherBench2Metrics
from tau_jax.train.checkpoint import abstract_like, restore_part
from tau_jax.train.predictions import PredictionWriter
from tau_jax.train.sharding import batch_sharding, local_batch_size, make_mesh, tree_shardings
from tau_jax.train.workdir import check_source_matches_model, load_config


def make_predict_step(model, config, mesh, padding=EDGE):
    """Jitted (variables, frames (B, T+T', ...)) -> the model's out_frames frames, float32,
    every model call on frames padded with `padding` and cropped back (as `predict`)."""
    t = config.model.in_shape[0]
    framing = models.framing_of(config.model, padding)

    def step(variables, frames):
        return models.rollout(model, config.model, variables, frames[:, :t],
                              int(config.model.out_frames), framing.around)

    return jax.jit(step, out_shardings=batch_sharding(mesh),
                   compiler_options=models.compiler_options(config.model))


class EvaluationInterrupted(Exception):
    """An evaluation given up because the job is asked to stop (preemption.py)."""


def evaluate_split(predict_step, variables, source, config, mesh, samples: int = 0,
                   keep: PredictionWriter | None = None, interrupted=None):
    """OpenSTL metrics over the whole split (every sample once, across all processes), for
    geographic fields WeatherBench2's latitude-weighted RMSE too and, where the source knows
    its frames' valid times, its ACC against the training split's climatology
    (weather_metrics.py), the same metrics of the copy-last-input-frame baseline
    ('copy_last_<metric>'), and the first `samples` (inputs, targets, predictions) in display
    units; `keep` receives every sequence's (inputs, targets, predictions) in display units, in
    order. `interrupted()`, asked before every batch, stops it with EvaluationInterrupted."""
    conventions = data.metric_conventions(config.data)
    acc = MetricAccumulator(**conventions, mean=source.mean, std=source.std)
    baseline = MetricAccumulator(**conventions, mean=source.mean, std=source.std)
    weighted = []  # (model, baseline) WeatherBench2 metrics of a geographic field
    if source.lat is not None:
        names = [label.split(" (")[0] for label in data.channel_labels(config.data)]
        clim = None if source.times is None else data.training_climatology(config.data)
        weighted = [WeatherBench2Metrics(source.lat, names, clim) for _ in range(2)]
    t = config.model.in_shape[0]
    raw = lambda a: a * source.std + source.mean  # noqa: E731 - display units
    shown, seen = None, 0  # `seen`: the split index of the batch's first row
    for frames, mask in eval_batches(source, config.data.eval_batch_size, batch_sharding(mesh)):
        if interrupted is not None and interrupted():
            raise EvaluationInterrupted
        pred = predict_step(variables, frames)
        frames, pred, mask = (np.asarray(multihost_utils.process_allgather(a, tiled=True))
                              for a in (frames, pred, mask))
        target = frames[:, t:]
        last = np.broadcast_to(frames[:, t - 1:t], target.shape)
        acc.update(pred, target, mask=mask)
        baseline.update(last, target, mask=mask)
        rows = np.minimum(seen + np.arange(len(mask)), len(source) - 1)  # padding: any row
        seen += len(mask)
        times = None if source.times is None else source.times[rows, t:]  # valid times
        for w, p in zip(weighted, (pred, last)):
            w.update(raw(p), raw(target), times, mask=mask)
        if shown is None and samples:
            k = min(samples, int(mask.sum()))
            shown = (raw(frames[:k, :t]), raw(target[:k]), raw(pred[:k]))
        if keep is not None:  # without the padding rows
            real = mask.astype(bool)
            keep.add(raw(frames[real, :t]), raw(target[real]), raw(pred[real]))
    metrics = acc.result(per_frame=True)
    copy_last = baseline.result(per_frame=True)
    if weighted:
        metrics.update(weighted[0].result())
        copy_last.update(weighted[1].result())
    metrics.update({f"copy_last_{k}": v for k, v in copy_last.items()})
    return metrics, shown


def picture_style(config, source) -> dict:
    """How a run's pictures label the dataset: its MSE convention, channel labels (with units)
    and, for geographic fields, the (lat, lon) grid the maps are drawn on."""
    return dict(spatial_norm=data.metric_conventions(config.data)["spatial_norm"],
                labels=data.channel_labels(config.data),
                grid=None if source.lat is None else (source.lat, source.lon))


def save_pictures(folder: pathlib.Path, step: int, metrics: dict, shown, writer,
                  style: dict) -> None:
    """samples/step_N.{png,gif} (labelled sample grid and clip, each sequence's MSE as the
    dataset's metrics define it), step_N_map.png for geographic fields (truth, prediction and
    error of the first sequence's last lead time on latitude / longitude axes) and
    step_N_lead_time.png (each metric by lead time against copying the last input frame), also
    shown in TensorBoard."""
    stem = folder / f"step_{step:08d}"
    if shown is not None:
        png, _ = visualize.save_samples(*shown, stem, title=f"step {step}",
                                        spatial_norm=style["spatial_norm"],
                                        channel_names=style["labels"])
        writer.image(step, "eval/samples", visualize.figure_array(png))
        if style["grid"] is not None:
            _, targets, preds = shown
            path = visualize.save_map(targets[0, -1], preds[0, -1], *style["grid"],
                                      f"{stem}_map.png", labels=style["labels"],
                                      title=f"step {step}, sequence 0, lead +{preds.shape[1]}")
            writer.image(step, "eval/map", visualize.figure_array(path))
    lead = visualize.save_lead_time(metrics, f"{stem}_lead_time.png", f"step {step}")
    writer.image(step, "eval/lead_time", visualize.figure_array(lead))


def check_checkpoint_choice(which) -> str | int:
    """'best', 'latest' or a step number (as given on the command line)."""
    if which in ("best", "latest"):
        return which
    if isinstance(which, bool) or not str(which).isdigit():
        raise ValueError(f"--checkpoint must be best, latest or a step number, got {which!r}.")
    return int(which)


def restore_variables(config, workdir: str | os.PathLike, mesh,
                      checkpoint: str | int = "best") -> tuple[int, dict]:
    """(step, variables for `model.apply`) of checkpoint 'best', 'latest' or STEP in `workdir`,
    placed on `mesh`: the parameters (their moving average when the run kept one) and BatchNorm
    statistics only; no optimiser is built and its state is not read."""
    shapes = jax.eval_shape(lambda: models.init(config.model, jax.random.key(0)))
    params = "ema_params" if config.optim.ema_decay else "params"
    wanted = {params: shapes["params"]}
    if shapes.get("batch_stats"):
        wanted["batch_stats"] = shapes["batch_stats"]
    step, restored = restore_part(workdir, abstract_like(wanted, tree_shardings(wanted, mesh)),
                                  check_checkpoint_choice(checkpoint))
    return step, {"params": restored[params], "batch_stats": restored.get("batch_stats", {})}


def evaluate(workdir: str | os.PathLike, config=None, checkpoint: str | int = "best",
             save_predictions: bool = False) -> dict:
    """Metrics of checkpoint 'best' (lowest validation MSE, as OpenSTL tests), 'latest' or STEP
    in `workdir` over the evaluation split; `metrics['step']` says which step that was. With
    `save_predictions`, every sequence's inputs, targets and predictions go to
    `<workdir>/predictions/<step>/` (train.predictions) and `metrics['predictions']` names it."""
    workdir = pathlib.Path(workdir)
    config = config or load_config(workdir)
    model = models.build(config.model)
    mesh = make_mesh(config.train.mesh)
    local_batch_size(config.data.eval_batch_size, mesh, "data.eval_batch_size")
    step, variables = restore_variables(config, workdir, mesh, checkpoint)
    source = data.get_source(config.data, config.data.eval_split)
    check_source_matches_model(source, config.model)
    keep = None
    if save_predictions and jax.process_index() == 0:
        t = config.model.in_shape[0]
        keep = PredictionWriter(workdir, step, len(source), (t, *source.shape[1:]),
                                (config.model.out_frames, *source.shape[1:]))
    try:
        predict_step = make_predict_step(model, config, mesh, data.frame_padding(config.data, source))
        metrics, _ = evaluate_split(predict_step, variables, source,
                                    config, mesh, keep=keep)
    except BaseException:
        if keep is not None:
            keep.abandon()
        raise
    metrics = {"step": step, **metrics}
    if keep is not None:
        metrics["predictions"] = str(keep.commit(metrics))
    return metrics
