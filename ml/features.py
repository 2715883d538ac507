"""Decode once, cache once.

A frozen backbone's features are computed a single time per (photos, backbone, weights,
image size) and stored as ``.npy`` under ``data/cache``; later runs and later epochs read
them back. From-scratch training caches decoded uint8 images the same way, so epochs after
the first never decode a JPEG again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ml.data import ManifestRow
from ml.images import ImageError, load_tensor

CACHE_VERSION = "1"  # bump when decoding or resizing changes


class PhotoDataset(Dataset[torch.Tensor]):
    def __init__(self, paths: list[Path], image_size: int) -> None:
        self.paths, self.image_size = paths, image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        try:
            return load_tensor(self.paths[i], self.image_size)
        except (ImageError, OSError) as exc:
            raise RuntimeError(f"{self.paths[i]}: {exc} (re-run prepare: the manifest is stale)") from exc


def cache_key(kind: str, rows: list[ManifestRow], image_size: int, extra: str = "") -> str:
    h = hashlib.sha256(f"{kind}|{CACHE_VERSION}|{image_size}|{extra}|".encode())
    for r in rows:
        h.update(r.sha256.encode())
    return h.hexdigest()[:24]


def batches(paths: list[Path], image_size: int, batch_size: int, workers: int) -> DataLoader[torch.Tensor]:
    return DataLoader(
        PhotoDataset(paths, image_size),
        batch_size=batch_size,
        num_workers=workers,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(0),  # never draw from the global RNG training uses
    )


def _cached(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    if path.is_file():
        return np.load(path, allow_pickle=False)
    array = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        np.save(fh, array, allow_pickle=False)
    os.replace(tmp, path)
    return array


def decoded_images(rows: list[ManifestRow], root: Path, image_size: int, cache_dir: Path, workers: int) -> np.ndarray:
    """uint8 N×3×S×S for the rows, decoded once and cached."""
    path = cache_dir / f"images-{cache_key('images', rows, image_size)}.npy"

    def compute() -> np.ndarray:
        out = np.empty((len(rows), 3, image_size, image_size), dtype=np.uint8)
        loader = batches([root / r.path for r in rows], image_size, 256, workers)
        i = 0
        for batch in tqdm(loader, desc=f"decoding {len(rows)} photos", unit="batch", dynamic_ncols=True):
            out[i : i + len(batch)] = batch.numpy()
            i += len(batch)
        return out

    return _cached(path, compute)


@torch.inference_mode()
def backbone_features(
    embed: Callable[[torch.Tensor], torch.Tensor],
    rows: list[ManifestRow],
    root: Path,
    image_size: int,
    cache_dir: Path,
    backbone_id: str,
    workers: int,
    device: torch.device,
) -> np.ndarray:
    """float32 N×D features of the frozen backbone, computed once and cached."""
    path = cache_dir / f"features-{cache_key('features', rows, image_size, backbone_id)}.npy"

    def compute() -> np.ndarray:
        chunks = []
        loader = batches([root / r.path for r in rows], image_size, 64, workers)
        with tqdm(total=len(rows), desc="backbone features", unit="img", dynamic_ncols=True) as bar:
            for batch in loader:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    chunks.append(embed(batch.to(device)).float().cpu().numpy())
                bar.update(len(batch))
        return np.concatenate(chunks).astype(np.float32)

    return _cached(path, compute)
