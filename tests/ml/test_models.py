from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from ml.images import load_tensor, normalise
from ml.models import (
    REGISTRY,
    SimpleCNN,
    build_model,
    get_spec,
    imagenet_efficientnet,
    imagenet_efficientnet_lite0,
    imagenet_state_dict,
    imagenet_weights_path,
    map_weight_names,
)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_model_gives_two_logits(name: str) -> None:
    spec = get_spec(name)
    model = build_model(name).eval()
    for size in (spec.min_size, 64):
        with torch.no_grad():
            assert model(torch.randn(2, 3, size, size)).shape == (2, 2)
            assert model.features(torch.randn(2, 3, size, size)).shape[0] == 2  # type: ignore[operator]


def test_simple_cnn_matches_the_reference_size() -> None:
    n = sum(p.numel() for p in SimpleCNN().parameters())
    assert 415_000 <= n <= 430_000  # the reference system's ~422K


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(
        ValueError,
        match="valid names: efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, simple_cnn, tiny_cnn",
    ):
        get_spec("vgg")


def test_weight_mapping_uses_every_tensor_with_equal_shapes() -> None:
    source = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    assert len(source) == 296
    assert sum(t.numel() for t in source.values()) == 4_694_073
    net = imagenet_efficientnet_lite0()
    names = map_weight_names(list(source), net)
    target = net.state_dict()
    assert len(set(names.values())) == len(names) == len(target)  # one to one, nothing left over
    assert all(source[k].shape == target[v].shape for k, v in names.items())
    loaded = imagenet_state_dict(net)
    assert all(torch.equal(loaded[v], source[k]) for k, v in names.items())


@pytest.mark.parametrize(("name", "tensors"), [("efficientnet_lite1", 386), ("efficientnet_lite2", 386)])
def test_the_larger_lites_map_every_tensor_too(name: str, tensors: int) -> None:
    source = torch.load(imagenet_weights_path(name), map_location="cpu", weights_only=True)
    net = imagenet_efficientnet(name)
    names = map_weight_names(list(source), net)
    assert len(source) == tensors and len(set(names.values())) == len(names) == len(net.state_dict())
    model = build_model(name, pretrained=True)
    assert torch.equal(model.net.conv_stem.weight, source["_conv_stem.weight"])  # type: ignore[union-attr]


def test_weight_mapping_refuses_a_model_it_does_not_fit() -> None:
    with pytest.raises(ValueError, match="not an EfficientNet"):
        imagenet_state_dict(build_model("simple_cnn"))


def test_pretrained_backbone_is_loaded_and_head_is_new() -> None:
    model = build_model("efficientnet_lite0", pretrained=True)
    source = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    assert torch.equal(model.net.conv_stem.weight, source["_conv_stem.weight"])  # type: ignore[union-attr]
    assert model.classifier.out_features == 2  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "size"), [("efficientnet_lite0", 224), ("efficientnet_lite1", 240), ("efficientnet_lite2", 260)]
)
def test_imagenet_head_sorts_real_photos_before_any_training(real_photos: Path, name: str, size: int) -> None:
    """The mapping is right only if the ImageNet model still recognises cats and dogs (each at
    the size its weights were trained at)."""
    torch.set_num_threads(2)
    rng = random.Random(0)
    cats = rng.sample(sorted((real_photos / "Cat").glob("*.jpg")), 100)
    dogs = rng.sample(sorted((real_photos / "Dog").glob("*.jpg")), 100)
    spec = get_spec(name)
    net = imagenet_efficientnet(name).to(memory_format=torch.channels_last)
    batch = torch.stack([load_tensor(p, size) for p in cats + dogs])
    with torch.inference_mode():
        probs = net(normalise(batch, spec.mean, spec.std).contiguous(memory_format=torch.channels_last)).softmax(1)
    cat_mass = probs[:, 281:286].sum(1)  # ImageNet's domestic cats
    dog_mass = probs[:, 151:269].sum(1)  # ImageNet's dog breeds
    truth = torch.tensor([0] * 100 + [1] * 100)
    accuracy = ((dog_mass > cat_mass).long() == truth).float().mean().item()
    print(f"{name} ImageNet head, cats vs dogs on 200 real photos: {accuracy:.3f}")
    assert accuracy >= 0.85
