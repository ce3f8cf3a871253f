"""M-VAAL / VAAL networks, losses and the lowest-score query."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gestalt_al.mvaal import (
    Discriminator,
    MultimodalVAE,
    MVAALConfig,
    discriminator_loss,
    discriminator_scores,
    gradient_penalty,
    kl_to_standard_normal,
    select_lowest,
    vae_adversarial,
    vae_losses,
)

TINY = MVAALConfig(image_size=32, latent_dim=8, width=4, batch_size=4)


def _images(n: int, seed: int, size: int = 32) -> torch.Tensor:
    return torch.rand((n, 1, size, size), generator=torch.Generator().manual_seed(seed))


def test_shapes_of_both_methods() -> None:
    torch.manual_seed(0)
    images = _images(5, 0)
    with torch.no_grad():
        main, aux, z, mu, log_variance = MultimodalVAE(TINY)(images)
    assert main.shape == aux.shape == images.shape
    assert z.shape == mu.shape == log_variance.shape == (5, 8)
    assert float(main.min()) >= 0
    assert float(main.max()) <= 1
    vaal = MVAALConfig(image_size=32, latent_dim=8, width=4, aux_channels=0)
    assert not vaal.multimodal
    assert MultimodalVAE(vaal)(images)[1] is None
    three_channel_aux = MVAALConfig(image_size=32, latent_dim=8, width=4, aux_channels=3)
    assert MultimodalVAE(three_channel_aux)(images)[1].shape == (5, 3, 32, 32)


def test_discriminator_output_range_follows_the_sigmoid_option() -> None:
    torch.manual_seed(0)
    z = 10 * torch.randn(64, 8)
    with_sigmoid = Discriminator(TINY).eval()(z)
    assert with_sigmoid.shape == (64,)
    assert bool(((with_sigmoid > 0) & (with_sigmoid < 1)).all())
    raw = MVAALConfig(image_size=32, latent_dim=8, width=4, discriminator_sigmoid=False)
    unbounded = Discriminator(raw).eval()(z)
    assert bool(((unbounded < 0) | (unbounded > 1)).any())


def test_kl_golden_values() -> None:
    zeros = torch.zeros(3, 4)
    assert float(kl_to_standard_normal(zeros, zeros)) == 0.0
    # mu = 1, sigma = 1: 0.5 * mu^2 per dimension, 4 dimensions.
    assert float(kl_to_standard_normal(torch.ones(3, 4), zeros)) == pytest.approx(2.0)
    # mu = 0, log sigma^2 = log 2: 0.5 * (2 - 1 - log 2) per dimension.
    log_two = torch.full((1, 4), float(np.log(2.0)))
    expected = 4 * 0.5 * (2 - 1 - np.log(2.0))
    assert float(kl_to_standard_normal(torch.zeros(1, 4), log_two)) == pytest.approx(expected)


class Linear(nn.Module):
    """D(z) = w . z: its gradient norm is |w| everywhere."""

    def __init__(self, weight: list[float]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(weight))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.weight


def test_gradient_penalty_is_zero_with_zero_gradient_at_unit_norm() -> None:
    labeled, unlabeled = torch.randn(16, 2), torch.randn(16, 2)
    optimum = Linear([0.6, 0.8])
    penalty = gradient_penalty(optimum, labeled, unlabeled)
    assert float(penalty.detach()) == pytest.approx(0.0, abs=1e-12)
    (grad,) = torch.autograd.grad(penalty, optimum.weight)
    assert float(grad.abs().max()) == pytest.approx(0.0, abs=1e-6)
    # |w| = 2: penalty (2 - 1)^2 = 1; its gradient 2 (|w| - 1) w / |w| = 2 * 1 * w / 2 = w.
    steep = Linear([1.2, 1.6])
    penalty = gradient_penalty(steep, labeled, unlabeled)
    assert float(penalty.detach()) == pytest.approx(1.0)
    (grad,) = torch.autograd.grad(penalty, steep.weight)
    torch.testing.assert_close(grad, torch.tensor([1.2, 1.6]))


def test_loss_signs_discriminator_learns_to_score_labeled_higher() -> None:
    torch.manual_seed(0)
    labeled, unlabeled = torch.randn(64, 8) + 1.5, torch.randn(64, 8) - 1.5
    discriminator = Discriminator(TINY)
    optimiser = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        loss = discriminator_loss(TINY, discriminator, labeled, unlabeled, generator)
        optimiser.zero_grad()
        torch.autograd.backward(loss)
        optimiser.step()
    discriminator.eval()
    with torch.no_grad():
        assert float(discriminator(labeled).min()) > float(discriminator(unlabeled).max())
        # The VAE's adversarial term is the opposite game: now positive, to be pushed down.
        assert float(vae_adversarial(discriminator, labeled, unlabeled)) > 0.5


def test_vae_loss_weights_its_terms() -> None:
    config = MVAALConfig(
        image_size=32, latent_dim=8, width=4, gamma_adv=2, gamma_main=3, gamma_aux=0.4, beta=5
    )
    target = (torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4))
    reconstruction = (torch.full((2, 1, 4, 4), 0.5), torch.full((2, 1, 4, 4), 1.0))
    mu, log_variance = torch.ones(2, 8), torch.zeros(2, 8)
    losses = vae_losses(config, reconstruction, target, mu, log_variance, torch.tensor(0.25))
    assert float(losses.main_reconstruction) == pytest.approx(0.25)
    assert float(losses.aux_reconstruction) == pytest.approx(1.0)
    assert float(losses.kl) == pytest.approx(4.0)
    assert float(losses.total) == pytest.approx(2 * 0.25 + 3 * 0.25 + 0.4 * 1.0 + 5 * 4.0)
    with pytest.raises(ValueError, match="needs the auxiliary modality"):
        vae_losses(config, (reconstruction[0], None), target, mu, log_variance, torch.tensor(0))


def test_vaal_is_mvaal_without_the_auxiliary_term() -> None:
    """Same weights, same noise: M-VAAL with gamma_3 = 0 and VAAL give the same loss and the
    same encoder gradients."""
    mvaal_config = MVAALConfig(image_size=32, latent_dim=8, width=4, gamma_aux=0.0)
    vaal_config = MVAALConfig(image_size=32, latent_dim=8, width=4, aux_channels=0)
    torch.manual_seed(0)
    mvaal = MultimodalVAE(mvaal_config)
    vaal = MultimodalVAE(vaal_config)
    shared = {k: v for k, v in mvaal.state_dict().items() if not k.startswith("aux_decoder")}
    vaal.load_state_dict(shared)
    discriminator = Discriminator(mvaal_config).eval()
    images, aux = _images(4, 1), _images(4, 2)
    results = []
    for config, model, target_aux in ((mvaal_config, mvaal, aux), (vaal_config, vaal, None)):
        torch.manual_seed(7)
        main_out, aux_out, z, mu, log_variance = model(images)
        adversarial = vae_adversarial(discriminator, z[:2], z[2:])
        losses = vae_losses(
            config, (main_out, aux_out), (images, target_aux), mu, log_variance, adversarial
        )
        gradients = torch.autograd.grad(losses.total, list(model.encoder.parameters()))
        results.append((losses.total.detach(), gradients))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_scores_restore_modes_and_refuse_bad_images() -> None:
    torch.manual_seed(0)
    vae, discriminator = MultimodalVAE(TINY).train(), Discriminator(TINY).train()
    images = _images(6, 0)
    scores = discriminator_scores(vae, discriminator, images, batch_size=4)
    assert scores.shape == (6,)
    assert scores.dtype == np.float64
    assert vae.training
    assert discriminator.training
    # Eval mode and the posterior mean make the scores deterministic and batch-independent.
    np.testing.assert_allclose(
        scores, discriminator_scores(vae, discriminator, images, batch_size=6), rtol=1e-6
    )
    sampled = discriminator_scores(vae, discriminator, images, on_mean=False)
    assert not np.allclose(sampled, scores)
    with pytest.raises(ValueError, match="NaN"):
        discriminator_scores(vae, discriminator, torch.full((2, 1, 32, 32), float("nan")))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        discriminator_scores(vae, discriminator, torch.rand(2, 32, 32))


def test_select_lowest_picks_the_lowest_scores_lowest_first() -> None:
    scores = np.array([0.9, 0.1, 0.5, 0.1, 0.3])
    ids = np.array(["a", "b", "c", "d", "e"])
    chosen = select_lowest(scores, ids, 3)
    assert chosen.indices.tolist() == [1, 3, 4]  # ties (b, d) by id
    np.testing.assert_array_equal(chosen.scores, [-0.1, -0.1, -0.3])
    with pytest.raises(ValueError, match="larger than the pool"):
        select_lowest(scores, ids, 6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 40}, "multiple of 16"),
        ({"aux_channels": -1}, "aux_channels >= 0"),
        ({"latent_dim": 0}, "latent_dim must be >= 1"),
        ({"gamma_aux": float("nan")}, "gamma_aux must be finite"),
        ({"learning_rate": 0.0}, "learning_rate must be finite and > 0"),
    ],
)
def test_config_errors(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MVAALConfig(**kwargs)  # type: ignore[arg-type]
