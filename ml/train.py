"""Train a cat/dog classifier from params.yaml and write the release model.

Read top to bottom: set-up, data (decoded or embedded once), the fit loop, test metrics,
the release artifact and its MLflow run. ``python -m ml.train`` is the DVC ``train`` stage.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from torch import nn
from torchvision.transforms import v2
from tqdm import tqdm

from ml import not_a_pet, tracking
from ml.artifact import save_release
from ml.config import ConfigError, Params, TrainParams, load_params
from ml.data import MANIFEST, SPLITS, DataError, ManifestRow, read_manifest, select
from ml.features import backbone_features, decoded_images
from ml.fileio import atomic_writer, file_sha256
from ml.images import normalise
from ml.metrics import classification_metrics, confusion_png, curves_png
from ml.models import CLASSES, PetNet, Top, get_spec, imagenet_weights_path

Prepare = Callable[[torch.Tensor, bool], torch.Tensor]  # (batch, training) → model input
Data = dict[str, tuple[torch.Tensor, torch.Tensor]]  # split → (inputs, labels)


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    best_epoch: int = 0
    images_seen: int = 0
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def limit_rows(rows: list[ManifestRow], per_split: int) -> list[ManifestRow]:
    """A small, still stratified subset (for smoke runs): the first N per split and label."""
    kept: list[ManifestRow] = []
    for s in SPLITS:
        for label in CLASSES:
            group = sorted((r for r in rows if r.split == s and r.label == label), key=lambda r: r.sha256)
            kept += group[: max(1, per_split // len(CLASSES))]
    return kept


# --- the fit loop -----------------------------------------------------------------------


def make_optimizer(module: nn.Module, p: TrainParams) -> torch.optim.Optimizer:
    params = [t for t in module.parameters() if t.requires_grad]
    if p.optimizer == "sgd":
        return torch.optim.SGD(params, lr=p.lr, momentum=0.9, nesterov=True, weight_decay=p.weight_decay)
    return torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay)


def make_scheduler(
    opt: torch.optim.Optimizer, p: TrainParams, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    total, warmup = p.epochs * steps_per_epoch, p.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if p.scheduler == "none":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@torch.inference_mode()
def predict(module: nn.Module, x: torch.Tensor, prepare: Prepare, device: torch.device, bs: int = 256) -> torch.Tensor:
    """Class probabilities for a whole split."""
    module.eval()
    out = []
    for i in range(0, len(x), bs):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out.append(torch.softmax(module(prepare(x[i : i + bs], False).to(device)).float(), 1).cpu())
    return torch.cat(out)


def fit(
    module: nn.Module,
    data: Data,
    prepare: Prepare,
    p: TrainParams,
    device: torch.device,
    on_epoch: Callable[[dict[str, float]], None],
) -> FitResult:
    x, y = data["train"]
    xv, yv = data["val"]
    steps = math.ceil(len(x) / p.batch_size)
    opt, loss_fn = make_optimizer(module, p), nn.CrossEntropyLoss(label_smoothing=p.label_smoothing)
    sched = make_scheduler(opt, p, steps)
    order = torch.Generator().manual_seed(p.seed)
    result, best, stale = FitResult(), (-1.0, math.inf), 0
    start = time.perf_counter()
    for epoch in range(1, p.epochs + 1):
        module.train()
        seen, loss_sum, correct = 0, 0.0, 0
        perm = torch.randperm(len(x), generator=order)
        with tqdm(total=len(x), desc=f"epoch {epoch}/{p.epochs}", unit="img", dynamic_ncols=True) as bar:
            for i in range(0, len(x), p.batch_size):
                idx = perm[i : i + p.batch_size]
                if len(idx) < 2:  # batch norm cannot train on a single sample
                    continue
                xb, yb = prepare(x[idx], True).to(device), y[idx].to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    logits = module(xb)
                loss = loss_fn(logits.float(), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                seen += len(idx)
                loss_sum += loss.item() * len(idx)
                correct += int((logits.argmax(1) == yb).sum())
                bar.update(len(idx))
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
        result.images_seen += seen
        probs = predict(module, xv, prepare, device)
        val = classification_metrics(yv.numpy(), probs[:, 1].numpy())
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "val_loss": float(nn.functional.cross_entropy(probs.clamp_min(1e-7).log(), yv)),
            **{f"val_{k}": float(val[k]) for k in ("accuracy", "precision", "recall", "f1")},
            "lr": float(sched.get_last_lr()[0]),
        }
        result.history.append(row)
        on_epoch(row)
        if (row["val_accuracy"], -row["val_loss"]) > (best[0], -best[1]):
            best, stale = (row["val_accuracy"], row["val_loss"]), 0
            result.best_state, result.best_epoch = copy.deepcopy(module.state_dict()), epoch
        else:
            stale += 1
            if stale >= p.early_stopping_patience:
                print(f"early stopping: no better val accuracy for {stale} epochs", file=sys.stderr)
                break
    result.seconds = time.perf_counter() - start
    return result


# --- one training run, end to end -------------------------------------------------------


def linear_probe(
    head: nn.Module,
    top: Top,
    data: Data,
    p: TrainParams,
    device: torch.device,
) -> None:
    """Fit the head alone on the pooled features of the frozen top (LP-FT's first step)."""
    with torch.inference_mode():
        top.eval()
        pooled = {
            s: (torch.cat([top.embed(x[i : i + 256].to(device)).cpu() for i in range(0, len(x), 256)]), y)
            for s, (x, y) in data.items()
        }
    probe = p.model_copy(
        update={"epochs": p.linear_probe_epochs, "lr": 1e-3, "weight_decay": 1e-4, "label_smoothing": 0.0}
    )
    result = fit(head, pooled, lambda batch, _training: batch, probe, device, lambda _row: None)
    head.load_state_dict(result.best_state)
    best = result.history[result.best_epoch - 1]["val_accuracy"]
    print(f"linear probe: val accuracy {best:.4f} after {result.best_epoch} epochs; fine-tuning from there")
    mlflow.log_metric("linear_probe_val_accuracy", best)


def feature_prepare(hflip: bool) -> Prepare:
    """Cached trunk outputs (feature maps) need no preprocessing; mirroring a map left to right
    is a cheap stand-in for mirroring the photo."""

    def prepare(batch: torch.Tensor, training: bool) -> torch.Tensor:
        if training and hflip:
            flip = torch.rand(len(batch)) < 0.5
            batch = batch.clone()
            batch[flip] = batch[flip].flip(-1)
        return batch

    return prepare


def image_prepare(params: Params, mean: tuple[float, ...], std: tuple[float, ...]) -> Prepare:
    a, size = params.train.augment, params.model.image_size
    steps: list[nn.Module] = [v2.RandomResizedCrop(size, scale=(a.crop_scale, 1.0), antialias=True)]
    if a.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if a.color_jitter:
        steps.append(v2.ColorJitter(brightness=a.color_jitter, contrast=a.color_jitter, saturation=a.color_jitter))
    augment = v2.Compose(steps)

    def prepare(batch: torch.Tensor, training: bool) -> torch.Tensor:
        if training:
            batch = torch.stack([augment(img) for img in batch])
        return normalise(batch, mean, std)

    return prepare


def training_inputs(
    params: Params, model: PetNet, rows: dict[str, list[ManifestRow]], source: Path, cache_dir: Path
) -> tuple[Data, nn.Module, Prepare]:
    """Each split decoded once, or embedded once by the frozen backbone (cached on disk), with the
    module that trains on it and how a batch is prepared."""
    spec = get_spec(params.model.name)
    device = next(model.parameters()).device
    workers = params.train.threads - 1  # decode in a separate process when a core is spare
    labels = {s: torch.tensor([CLASSES.index(r.label) for r in rows[s]]) for s in SPLITS}
    size = params.model.image_size
    if not params.model.freeze_backbone:
        images = {s: decoded_images(rows[s], source, size, cache_dir, workers) for s in SPLITS}
        data = {s: (torch.from_numpy(images[s]), labels[s]) for s in SPLITS}
        return data, model, image_prepare(params, spec.mean, spec.std)
    model.eval()
    cut = params.model.finetune_blocks
    backbone_id = (
        f"{params.model.name}:{file_sha256(imagenet_weights_path(params.model.name))[:16]}"
        + (f":trunk-{cut}" if cut else "")
        + (":flip-mean" if model.test_time_flip else "")
    )

    def embed(batch: torch.Tensor) -> torch.Tensor:
        x = normalise(batch, spec.mean, spec.std)
        return model.trunk(x, cut) if cut else model.embed(x)

    features = {
        s: backbone_features(embed, rows[s], source, size, cache_dir, backbone_id, workers, device) for s in SPLITS
    }
    data = {s: (torch.from_numpy(features[s]), labels[s]) for s in SPLITS}
    trainable: nn.Module = model.top(cut) if cut else model.classifier
    return data, trainable, feature_prepare(params.train.augment.hflip and cut > 0)


def run(
    params: Params, manifest: Path, source: Path, out_dir: Path, cache_dir: Path, reports: Path, limit: int | None
) -> dict[str, Any]:
    started = time.perf_counter()
    commit = tracking.git_commit()  # what the run starts from: edits made while it runs do not count
    seed_everything(params.train.seed)
    torch.set_num_threads(params.train.threads)
    device = pick_device()
    rows = read_manifest(manifest)
    rows = limit_rows(rows, limit) if limit else rows
    split_rows = {s: select(rows, s) for s in SPLITS}
    empty = [s for s, r in split_rows.items() if not r]
    if empty:
        raise DataError(f"the manifest has no photos in split(s) {', '.join(empty)}")
    spec = get_spec(params.model.name)
    model = spec.build(spec.pretrained).to(device)
    model.test_time_flip = params.model.test_time_flip

    tracking.configure(params.mlflow.experiment)
    manifest_sha = file_sha256(manifest)
    with mlflow.start_run() as active:
        mlflow.set_tags({"git_commit": commit, "data_manifest_sha256": manifest_sha, "model": params.model.name})
        mlflow.log_params(_flatten(params.model_dump()))
        data_report = manifest.parent / "data_report.json"
        if data_report.is_file():
            mlflow.log_artifact(str(data_report), "data")

        cache_start = time.perf_counter()
        data, trainable, prepare = training_inputs(params, model, split_rows, source, cache_dir)
        cache_seconds = time.perf_counter() - cache_start

        def log_epoch(row: dict[str, float]) -> None:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))

        if params.model.freeze_backbone and params.model.finetune_blocks and params.train.linear_probe_epochs:
            assert isinstance(trainable, Top)  # finetune_blocks > 0 made it model.top(cut)
            linear_probe(model.classifier, trainable, data, params.train, device)

        result = fit(trainable, data, prepare, params.train, device, log_epoch)
        provenance = {"manifest_sha256": manifest_sha, "mlflow_run_id": active.info.run_id, "git_commit": commit}
        trainable.load_state_dict(result.best_state)
        fitted = _fit_not_a_pet(model, trainable, data, prepare, params, device)
        test_labels, test_inputs = data["test"][1], data["test"][0]
        test = classification_metrics(
            test_labels.numpy(), predict(trainable, test_inputs, prepare, device)[:, 1].numpy()
        )
        seconds = time.perf_counter() - started
        card = save_release(
            model.cpu(),
            _card(params, spec, test, result, seconds, cache_seconds, len(rows), provenance, device)
            | {"not_a_pet": fitted.card(params.not_a_pet.val_flag_rate)},
            out_dir,
        )
        _log_results(test, result, card, out_dir, reports)
    return card


@torch.inference_mode()
def embeddings(trainable: nn.Module, x: torch.Tensor, prepare: Prepare, device: torch.device) -> torch.Tensor:
    """The pooled embeddings the classifier reads, for a whole split."""
    if isinstance(trainable, nn.Linear):  # x already holds them (the frozen backbone's cache)
        return x
    embed: Any = trainable  # a PetNet or a Top: both have embed()
    trainable.eval()
    return torch.cat(
        [embed.embed(prepare(x[i : i + 256], False).to(device)).float().cpu() for i in range(0, len(x), 256)]
    )


def _fit_not_a_pet(
    model: PetNet, trainable: nn.Module, data: Data, prepare: Prepare, params: Params, device: torch.device
) -> not_a_pet.Fitted:
    """Fit the not-a-pet detector on the trained model's embeddings, attach it, log its choice."""
    p = params.not_a_pet
    train, val, test = (embeddings(trainable, data[s][0], prepare, device) for s in SPLITS)
    fitted = not_a_pet.fit(train, val, p.centroids, p.val_flag_rate, params.train.seed)
    fitted = fitted.measured(test)  # the test split's pets, read once like the test metrics
    model.detector = fitted.detector.to(device)
    mlflow.log_metrics(
        {
            "not_a_pet_threshold": fitted.threshold,
            "not_a_pet_val_flagged": fitted.val_flagged,
            "not_a_pet_test_flagged": float(fitted.test_flagged or 0),
        }
    )
    return fitted


def _log_results(test: dict[str, Any], result: FitResult, card: dict[str, Any], out_dir: Path, reports: Path) -> None:
    """Test metrics, timing and the pictures (confusion matrix, curves) into the active MLflow run."""
    _write_history(result.history, reports / "train_history.csv")
    mlflow.log_metrics({f"test_{k}": float(v) for k, v in test.items() if isinstance(v, float)})
    mlflow.log_metrics(
        {"train_seconds": card["training"]["seconds"], "images_per_second": card["training"]["images_per_second"]}
    )
    cm_png = confusion_png(test["confusion_matrix"], reports / "confusion_matrix.png", "Test confusion matrix")
    mlflow.log_artifact(str(cm_png), "plots")
    mlflow.log_artifact(str(curves_png(result.history, reports / "learning_curves.png")), "plots")
    mlflow.log_artifact(str(reports / "train_history.csv"), "plots")
    mlflow.log_artifacts(str(out_dir), "model")


def _card(
    params: Params,
    spec: Any,
    test: dict[str, Any],
    result: FitResult,
    seconds: float,
    cache_seconds: float,
    n_photos: int,
    provenance: dict[str, str],
    device: torch.device,
) -> dict[str, Any]:
    return {
        "name": params.mlflow.registered_model,
        "architecture": params.model.name,
        "description": spec.description,
        "image_size": params.model.image_size,
        "test_time_flip": params.model.test_time_flip,
        "classes": list(CLASSES),
        "normalization": {"mean": list(spec.mean), "std": list(spec.std)},
        "preprocessing": "EXIF-rotate, convert to RGB, resize the whole photo to image_size x image_size (bilinear)",
        "params": {"model": params.model.model_dump(), "train": params.train.model_dump()},
        "test_metrics": test,
        "best_val": result.history[result.best_epoch - 1] if result.best_epoch else {},
        "training": {
            "seconds": round(seconds, 1),
            "cache_seconds": round(cache_seconds, 1),
            "fit_seconds": round(result.seconds, 1),
            "epochs_run": len(result.history),
            "best_epoch": result.best_epoch,
            "photos": n_photos,
            "images_per_second": round(n_photos / seconds, 1),
            "fit_images_per_second": round(result.images_seen / max(result.seconds, 1e-9), 1),
            "device": device.type,
            "threads": params.train.threads,
        },
        "data": {"manifest_sha256": provenance["manifest_sha256"]},
        "git_commit": provenance["git_commit"],
        "mlflow_run_id": provenance["mlflow_run_id"],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, f"{key}.") if isinstance(v, dict) else {key: v})
    return out


def _write_history(history: list[dict[str, float]], path: Path) -> None:
    with atomic_writer(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument(
        "--source", type=Path, help="photo folder the manifest is relative to (default: params data.source)"
    )
    ap.add_argument("--out", type=Path, default=Path("models"))
    ap.add_argument("--cache-dir", type=Path, default=Path("data/cache"))
    ap.add_argument("--reports", type=Path, default=Path("reports"))
    ap.add_argument("--limit", type=int, help="use only about N photos per split (smoke runs)")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params)
        card = run(
            params,
            args.manifest,
            args.source or Path(params.data.source),
            args.out,
            args.cache_dir,
            args.reports,
            args.limit,
        )
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t = card["test_metrics"]
    seconds = card["training"]["seconds"]
    print(f"trained {card['version']}: test accuracy {t['accuracy']:.4f} on {t['n']} photos, {seconds} s → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
