"""The not-a-pet detector: fitted on embeddings, carried in the release, measured on real sets."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from app.inference import Classifier
from ml.artifact import load_release, predict_outputs
from ml.images import open_rgb, to_tensor
from ml.not_a_pet import NotAPetDetector, fit
from tests.helpers import ROOT, require_tool
from tests.nonpets import WALLPAPERS, non_pets


def clusters(n: int, seed: int) -> torch.Tensor:
    """Embeddings of two tight "pet" clusters around the first two axes of 16 dimensions."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(16)[:2] * 5
    return centres[torch.arange(n) % 2] + torch.randn(n, 16, generator=g) * 0.3


def test_a_photo_far_from_every_training_cluster_is_flagged_and_the_rate_holds_on_val() -> None:
    fitted = fit(clusters(400, 0), clusters(1000, 1), centroids=8, val_flag_rate=0.01, seed=0)
    assert fitted.detector.centroids.shape == (8, 16)
    assert torch.allclose(fitted.detector.centroids.norm(dim=1), torch.ones(8))
    assert fitted.val_flagged <= 0.01  # at most the rate asked for, never more
    assert fitted.val_flagged >= 0.005  # and not a threshold so loose it flags nothing
    elsewhere = torch.eye(16)[2:10] * 5  # other directions: what no training photo looked like
    assert fitted.flagged(elsewhere).all()
    assert fitted.flagged(clusters(1000, 2)).float().mean() < 0.03  # fresh pets: about the rate
    assert fitted.measured(clusters(200, 3)).test_flagged is not None


def test_the_distance_is_scale_free_and_fewer_photos_than_centroids_still_fit() -> None:
    fitted = fit(clusters(5, 0), clusters(50, 1), centroids=64, val_flag_rate=0.1, seed=0)
    assert fitted.detector.centroids.shape[0] == 5  # k-means cannot make more centroids than photos
    detector = NotAPetDetector(16, 2)
    detector.centroids.copy_(F.normalize(torch.eye(16)[:2], dim=1))
    x = torch.eye(16)[:1]
    assert detector(x).item() == pytest.approx(0.0, abs=1e-6)
    assert detector(x * 1000).item() == pytest.approx(0.0, abs=1e-6)
    assert detector(torch.eye(16)[2:3]).item() == pytest.approx(1.0)


def test_duplicate_photos_make_no_more_centroids_than_distinct_embeddings() -> None:
    # Tiny or synthetic sets repeat embeddings; k-means warned once per training that it found
    # fewer clusters than asked for. The detector asks for no more than there are.
    train = clusters(3, 0).repeat(10, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted = fit(train, clusters(20, 1), centroids=8, val_flag_rate=0.1, seed=0)
    assert fitted.detector.centroids.shape[0] == 3


def test_a_release_without_a_detector_says_it_cannot_tell(tiny_model: Path) -> None:
    release = load_release(tiny_model)  # a card written before the detector existed
    assert release.not_a_pet_threshold is None and release.model.detector is None
    out = predict_outputs(release, torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert out.shape == (2, 3) and torch.all(out[:, 2] == 0)
    assert torch.allclose(out[:, :2].sum(dim=1), torch.ones(2))


@pytest.fixture(scope="module")
def release_classifier() -> Classifier:
    classifier = Classifier(str(ROOT / "models"), threads=2)  # the service's own path: decode, forward, flag
    assert classifier.ready, classifier.error
    return classifier


def test_the_release_flags_at_least_90_percent_of_non_pets(release_classifier: Classifier) -> None:
    require_tool(str(WALLPAPERS / "warty-final-ubuntu.png"), "make system-deps: lomiri-wallpapers")
    photos = non_pets()
    assert len(photos) >= 80
    missed = [name for name, data in photos if not release_classifier.predict(data).not_a_pet]
    flagged = 1 - len(missed) / len(photos)
    print(f"non-pets flagged: {flagged:.1%} of {len(photos)}; missed: {missed}")
    assert flagged >= 0.90, missed


def test_the_release_flags_at_most_half_a_percent_of_the_test_splits_pets(real_photos: Path) -> None:
    release = load_release(ROOT / "models")
    threshold = release.not_a_pet_threshold
    assert threshold is not None
    with (ROOT / "reports" / "test_predictions.csv").open() as fh:
        paths = [row["path"] for row in csv.DictReader(fh)]
    assert len(paths) > 2000
    torch.set_num_threads(2)
    flagged = []
    for i in range(0, len(paths), 32):  # decoded as the service decodes; batches only for speed
        chunk = paths[i : i + 32]
        batch = torch.stack(
            [to_tensor(open_rgb((real_photos / p).read_bytes(), release.image_size), release.image_size) for p in chunk]
        )
        distances = predict_outputs(release, batch)[:, 2]
        flagged += [p for p, d in zip(chunk, distances.tolist(), strict=True) if d > threshold]
    share = len(flagged) / len(paths)
    print(f"test-split pets flagged: {share:.2%} ({len(flagged)} of {len(paths)}): {flagged}")
    assert share <= 0.005, flagged
    card = json.loads((ROOT / "models" / "model.json").read_text())
    assert card["not_a_pet"]["test_flagged"] == pytest.approx(share, abs=2 / len(paths))  # as training measured
