"""Does the photo show a cat or a dog at all?

Staff upload what they have: paperwork, a logo, a person, a blank placeholder. The classifier
answers cat or dog for anything; this detector says when a photo lies far from every pet the
model was trained on. It is the nearest-neighbour distance of Sun et al., "Out-of-distribution
detection with deep nearest neighbors" (ICML 2022), against k-means centroids of the training
photos' normalised embeddings instead of all of them (64 centroids are 330 kB, not 100 MB):
distance = 1 - cosine similarity to the nearest centroid.

The threshold is the distance that flags a chosen share of the validation split's pets
(``not_a_pet.val_flag_rate``): the test split is not read to choose it. Measured against the
ImageNet head's cat-and-dog probability and a Mahalanobis distance in docs/decisions.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

METHOD = "knn-centroids-cosine"


class NotAPetDetector(nn.Module):
    """Embeddings N×D → distance from the nearest training centroid, N (0 = a typical pet)."""

    centroids: torch.Tensor

    def __init__(self, dim: int, centroids: int) -> None:
        super().__init__()
        self.register_buffer("centroids", torch.zeros(centroids, dim))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        unit = F.normalize(embedding.float(), dim=1)
        return 1 - (unit @ self.centroids.T).amax(dim=1)


@dataclass(frozen=True)
class Fitted:
    detector: NotAPetDetector
    threshold: float
    val_flagged: float  # share of the validation split's pets over the threshold
    test_flagged: float | None = None  # the same on the test split, once measured

    def flagged(self, embeddings: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.detector(embeddings) > self.threshold

    def measured(self, test: torch.Tensor) -> Fitted:
        return replace(self, test_flagged=float(self.flagged(test).float().mean()))

    def card(self, val_flag_rate: float) -> dict[str, float | int | str | None]:
        return {
            "method": METHOD,
            "centroids": int(self.detector.centroids.shape[0]),
            "threshold": self.threshold,  # unrounded: the service compares with it
            "val_flag_rate": val_flag_rate,
            "val_flagged": round(self.val_flagged, 6),
            "test_flagged": None if self.test_flagged is None else round(self.test_flagged, 6),
        }


def fit(train: torch.Tensor, val: torch.Tensor, centroids: int, val_flag_rate: float, seed: int) -> Fitted:
    """Centroids of the training embeddings, threshold from the validation embeddings."""
    from sklearn.cluster import KMeans  # training only: the serving image has no scikit-learn

    unit = F.normalize(train.float(), dim=1).numpy()
    k = min(centroids, len(np.unique(unit, axis=0)))  # repeated photos make no more clusters
    kmeans = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(unit)
    detector = NotAPetDetector(unit.shape[1], k)
    detector.centroids.copy_(F.normalize(torch.from_numpy(kmeans.cluster_centers_).float(), dim=1))
    with torch.inference_mode():
        distances = detector(val).numpy()
    # "higher": the threshold is a real validation distance, and at most the rate lies above it.
    threshold = float(np.quantile(distances, 1 - val_flag_rate, method="higher"))
    return Fitted(detector, threshold, float(np.mean(distances > threshold)))
