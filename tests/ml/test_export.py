"""The AOTInductor package: built atomically, refused whenever it does not match the release
model it claims to be (weights, threads, CPU, eager results), and equal to eager PyTorch."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from ml import export
from ml.artifact import load_release, predict_outputs
from ml.export import PackageError, export_package, load_package
from ml.images import load_tensor
from tests.helpers import ROOT, save_tiny_release


@pytest.fixture
def tiny(tiny_model: Path, tiny_package: Path) -> tuple[Path, Path]:
    """The shared tiny release and its compiled package (tests/conftest.py: compiled once)."""
    return tiny_model, tiny_package


def test_the_package_equals_eager_and_records_what_it_was_built_from(tiny: tuple[Path, Path]) -> None:
    model_dir, package = tiny
    release = load_release(model_dir)
    forward = load_package(package, release, threads=1)
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert torch.allclose(forward(x), predict_outputs(release, x), atol=1e-5)
    meta = torch._inductor.aoti_load_package(str(package)).get_metadata()
    assert meta["pet.weights_sha256"] == release.card["weights"]["sha256"]
    assert meta["pet.image_size"] == "32" and meta["pet.mean"] == "0.5,0.5,0.5" and meta["pet.threads"] == "1"
    assert meta["pet.cpu_capability"] == "AVX2"  # portable, whatever this machine offers
    assert [p.name for p in package.parent.iterdir()] == ["model.pt2"]  # no temp file left behind


def test_the_package_computes_the_not_a_pet_distance_as_eager(tmp_path: Path) -> None:
    save_tiny_release(tmp_path / "model", not_a_pet_threshold=0.5)
    release = load_release(tmp_path / "model")
    forward = load_package(export_package(release, tmp_path / "model.pt2"), release, threads=1)
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        got, eager = forward(x), predict_outputs(release, x)
    assert got.shape == (1, 3) and 0 < eager[0, 2] <= 2  # a real distance, not the no-detector 0
    assert torch.allclose(got, eager, atol=1e-5)


def test_a_package_for_other_weights_or_threads_is_refused(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    _, package = tiny
    save_tiny_release(tmp_path / "retrained", seed=1)
    with pytest.raises(PackageError, match=r"pet\.weights_sha256"):
        load_package(package, load_release(tmp_path / "retrained"), threads=1)
    save_tiny_release(tmp_path / "renormalised", normalization={"mean": [0.4] * 3, "std": [0.5] * 3})
    with pytest.raises(PackageError, match=r"pet\.mean"):
        load_package(package, load_release(tmp_path / "renormalised"), threads=1)
    with pytest.raises(PackageError, match=r"pet\.threads='1', this service needs '2'"):
        load_package(package, load_release(tiny[0]), threads=2)
    save_tiny_release(tmp_path / "flipped", test_time_flip=True)  # the same weights, used another way
    with pytest.raises(PackageError, match=r"pet\.test_time_flip"):
        load_package(package, load_release(tmp_path / "flipped"), threads=1)


def test_a_test_time_flip_model_compiles_to_the_same_answers(tmp_path: Path) -> None:
    save_tiny_release(tmp_path / "flipped", test_time_flip=True)
    release = load_release(tmp_path / "flipped")
    forward = load_package(export_package(release, tmp_path / "model.pt2"), release, threads=1)
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        assert torch.allclose(forward(x), predict_outputs(release, x), atol=1e-5)
        assert torch.allclose(forward(x.flip(-1)), forward(x), atol=1e-5)  # a mirror image is the same photo


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04" + b"\0" * 200])
def test_junk_or_missing_packages_are_refused(tiny: tuple[Path, Path], tmp_path: Path, content: bytes) -> None:
    release = load_release(tiny[0])
    with pytest.raises(PackageError, match="no compiled package"):
        load_package(tmp_path / "absent.pt2", release, threads=1)
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(content)
    with pytest.raises(PackageError, match="not a loadable AOTInductor package"):
        load_package(junk, release, threads=1)
    truncated = tmp_path / "truncated.pt2"
    truncated.write_bytes(tiny[1].read_bytes()[: tiny[1].stat().st_size // 2])
    with pytest.raises(PackageError, match="not a loadable"):
        load_package(truncated, release, threads=1)


def test_a_cpu_without_avx2_or_a_package_that_disagrees_is_refused(
    tiny: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    release = load_release(tiny[0])
    monkeypatch.setattr(export, "cpu_capability", lambda: "DEFAULT")
    with pytest.raises(PackageError, match="needs a AVX2 CPU; this one offers DEFAULT"):
        load_package(tiny[1], release, threads=1)
    monkeypatch.undo()
    with pytest.raises(PackageError, match="disagrees with the eager model"):
        export._probe(lambda x: torch.tensor([[0.9, 0.1, 0.0]]), release, tiny[1])
    with pytest.raises(PackageError, match=r"outputs of shape \(1, 2\), the model \(1, 3\)"):
        export._probe(lambda x: torch.tensor([[0.9, 0.1]]), release, tiny[1])


def test_a_failed_compile_leaves_no_file(
    tiny: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, package_path: str, **kw: object) -> str:
        Path(package_path).write_bytes(b"half a package")
        raise RuntimeError("g++ not found")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", broken)
    with pytest.raises(RuntimeError, match="g\\+\\+"):
        export_package(load_release(tiny[0]), tmp_path / "model.pt2")
    assert list(tmp_path.iterdir()) == []


def test_the_cli_refuses_a_missing_model(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="cannot export: model card not found"):
        export.main(["--model", str(tmp_path), "--out", str(tmp_path / "m.pt2")])
    assert not (tmp_path / "m.pt2").exists()


def test_the_compiled_release_model_classifies_real_photos_as_eager_does(real_photos: Path, tmp_path: Path) -> None:
    release = load_release(ROOT / "models")
    assert export.main(["--model", str(ROOT / "models"), "--out", str(tmp_path / "model.pt2")]) == 0
    forward = load_package(tmp_path / "model.pt2", release, threads=1)
    photos = random.Random(1).sample(sorted(real_photos.glob("*/*.jpg")), 64)
    worst = 0.0
    for photo in photos:
        x = load_tensor(photo, release.image_size).unsqueeze(0)
        with torch.inference_mode():
            compiled, eager = forward(x), predict_outputs(release, x)
        assert compiled.argmax().item() == eager.argmax().item(), photo.name
        worst = max(worst, (compiled - eager).abs().max().item())
    assert worst < 1e-4
