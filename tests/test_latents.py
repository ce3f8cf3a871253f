"""Saliency-map autoencoder latents, the single-process round and the explain figure."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gestalt_al.data import bundled_nih_path, load_dataset
from gestalt_al.latents import (
    MAP_SIZE,
    AutoencoderConfig,
    SaliencyLatentEncoder,
    fit_map_autoencoder,
    load_autoencoder,
    normalise_maps,
    save_autoencoder,
)
from gestalt_al.models import ModelConfig
from gestalt_al.pipeline import RoundSettings, run_round
from gestalt_al.plots.explain import explain_figure
from gestalt_al.ranking import VARIANTS, gestalt_scores
from gestalt_al.saliency import class_saliency
from gestalt_al.training import TrainConfig
from tests.saliency_nets import nih_images, trained_statistics_model

QUICK = AutoencoderConfig(latent_dim=8, epochs=40, batch_size=32, learning_rate=3e-3)


def _blob_maps(count: int, num_classes: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Noisy maps whose class maps hold a blob on the left or on the right (``side`` [N, K])."""
    generator = torch.Generator().manual_seed(seed)
    maps = 0.05 * torch.randn(count, num_classes, 48, 48, generator=generator)
    side = torch.randint(0, 2, (count, num_classes), generator=generator)
    for i, k in np.ndindex(count, num_classes):
        column = 6 + 24 * int(side[i, k])
        maps[i, k, 16:32, column : column + 16] += 1.0
    return maps, side.numpy()


def test_normalise_maps_resizes_and_scales_each_map_keeping_sign() -> None:
    maps = torch.zeros(2, 3, 64, 64)
    maps[0, 0, 10:20, 10:20] = 5.0
    maps[0, 1, 30:40, 30:40] = -0.002
    maps[1, 2] = torch.linspace(-3, 1, 64)
    out = normalise_maps(maps)
    assert out.shape == (2, 3, MAP_SIZE, MAP_SIZE)
    peaks = out.abs().amax(dim=(-2, -1))
    torch.testing.assert_close(peaks[0, :2], torch.ones(2))
    assert float(out[0, 1].min()) == pytest.approx(-1.0)  # negative evidence stays negative
    assert float(out[1, 2].min()) == pytest.approx(-1.0, abs=0.02)
    assert float(out[1, 2].max()) == pytest.approx(1 / 3, abs=0.02)
    assert float(out[0, 2].abs().max()) == 0.0  # an all-zero map stays zero, not NaN


@pytest.mark.parametrize(
    ("maps", "message"),
    [
        (torch.zeros(3, 64, 64), r"\[N, K, H, W\]"),
        (torch.full((1, 2, 8, 8), float("nan")), "NaN or infinite"),
    ],
)
def test_normalise_maps_refuses_bad_input(maps: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalise_maps(maps)


def test_autoencoder_learns_and_its_latents_separate_map_patterns() -> None:
    maps, _side = _blob_maps(24, 3, seed=0)
    rng_state = torch.random.get_rng_state()
    model, losses = fit_map_autoencoder(maps, QUICK, progress=False)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # global RNG untouched
    assert len(losses) == QUICK.epochs
    assert losses[-1] < 0.3 * losses[0]
    test_maps, test_side = _blob_maps(10, 3, seed=1)
    latents = model.encode(test_maps)
    assert latents.shape == (10, 3, QUICK.latent_dim)
    assert latents.dtype == torch.float32
    flat = torch.nn.functional.normalize(latents.reshape(30, -1), dim=1)
    cosine = flat @ flat.T
    same = torch.from_numpy(test_side.reshape(-1)[:, None] == test_side.reshape(-1)[None, :])
    off_diagonal = ~torch.eye(30, dtype=torch.bool)
    assert float(cosine[same & off_diagonal].mean()) > float(cosine[~same].mean()) + 0.3


def test_same_seed_same_autoencoder() -> None:
    maps, _ = _blob_maps(8, 2, seed=0)
    config = AutoencoderConfig(latent_dim=4, epochs=2)
    first, _ = fit_map_autoencoder(maps, config, progress=False)
    second, _ = fit_map_autoencoder(maps, config, progress=False)
    torch.testing.assert_close(first.encode(maps), second.encode(maps), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"latent_dim": 0}, "latent_dim must be >= 1"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"learning_rate": float("nan")}, "learning_rate must be positive"),
    ],
)
def test_autoencoder_config_errors(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AutoencoderConfig(**kwargs)  # type: ignore[arg-type]


def test_one_map_is_too_few_to_fit() -> None:
    with pytest.raises(ValueError, match="at least 2 saliency maps"):
        fit_map_autoencoder(torch.rand(1, 1, 8, 8), QUICK, progress=False)


def test_autoencoder_file_round_trip_and_refusals(tmp_path: Path) -> None:
    maps, _ = _blob_maps(6, 2, seed=0)
    model, _ = fit_map_autoencoder(maps, AutoencoderConfig(latent_dim=4, epochs=1), False)
    path = tmp_path / "autoencoder.pt"
    save_autoencoder(model, "grad_cam", path)
    loaded, method = load_autoencoder(path)
    assert method == "grad_cam"
    torch.testing.assert_close(loaded.encode(maps), model.encode(maps), rtol=0, atol=0)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a gestalt-al model file"):
        load_autoencoder(truncated)
    for latent_dim, stored_method, message in [
        (4, "shap", "not a map autoencoder"),
        (5, "grad_cam", "weights do not fit"),
    ]:
        forged = tmp_path / f"{stored_method}_{latent_dim}.pt"
        config = {"latent_dim": latent_dim, "map_size": MAP_SIZE, "method": stored_method}
        torch.save({"config": config, "state_dict": model.state_dict()}, forged)
        with pytest.raises(ValueError, match=message):
            load_autoencoder(forged)


def test_encoder_latents_are_the_autoencoded_class_maps() -> None:
    config = ModelConfig("resnet18", num_classes=3, image_size=28)
    model = trained_statistics_model(config)
    images = nih_images(28, count=12)
    encoder, labeled_maps = SaliencyLatentEncoder.fit(
        model, images[:8], "deep_taylor", AutoencoderConfig(latent_dim=6, epochs=2),
        batch_size=3, progress=False,
    )  # fmt: skip
    torch.testing.assert_close(labeled_maps, class_saliency(encoder.net, images[:8], "deep_taylor"))
    pool_latents = encoder.latents(images[8:], progress=False)
    assert pool_latents.shape == (4, 3, 6)
    assert pool_latents.dtype == np.float32
    whole_batch = class_saliency(encoder.net, images[8:], "deep_taylor")
    # Batches of 3 vs one of 4 change the float summation order, nothing else.
    np.testing.assert_allclose(
        pool_latents, encoder.autoencoder.encode(whole_batch).numpy(), rtol=1e-5, atol=1e-7
    )
    scores = gestalt_scores(pool_latents, "weighted_node", encoder.encode(labeled_maps))
    assert scores.shape == (4,)
    assert np.isfinite(scores).all()


def test_run_round_trains_encodes_and_scores_every_variant() -> None:
    nih = bundled_nih_path()
    train = load_dataset(nih, "train", "images")
    labeled, pool = train.subset(np.arange(40)), train.subset(np.arange(40, 70))
    validation = load_dataset(nih, "val", "images")
    settings = RoundSettings(
        arch="resnet18",
        image_size=28,
        method="grad_cam",
        latent_dim=8,
        train=TrainConfig(max_epochs=1, batch_size=20),
        autoencoder_epochs=2,
    )
    result = run_round(labeled, pool, validation, settings, progress=False)
    assert result.model_config.num_classes == 14
    assert len(result.training.history) == 1
    assert result.labeled_latents.shape == (40, 14, 8)
    assert result.pool_latents.shape == (30, 14, 8)
    assert result.pool_maps.shape == (30, 14, 28, 28)
    assert set(result.scores) == set(VARIANTS)
    for variant, scores in result.scores.items():
        np.testing.assert_array_equal(
            scores, gestalt_scores(result.pool_latents, variant, result.labeled_latents)
        )
    with pytest.raises(ValueError, match="need labels"):
        run_round(labeled, pool, dataclasses.replace(validation, labels=None), settings)


def test_explain_figure_writes_a_png_and_checks_counts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(2, 14, 28, 28))
    latents = rng.normal(size=(2, 14, 8))
    images = rng.integers(0, 255, size=(2, 28, 28), dtype=np.uint8)
    names = [f"class {k}" for k in range(14)]
    path = tmp_path / "explain.png"
    explain_figure(path, images, maps, latents, names, ["a", "b"], signed_maps=True)
    with Image.open(path) as png:
        assert png.format == "PNG"
        assert png.width > 1000
        assert png.height > 800
    with pytest.raises(ValueError, match="must agree in count"):
        explain_figure(path, images, maps, latents, names[:3], ["a", "b"], signed_maps=False)
