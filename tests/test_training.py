"""Training: metrics against scikit-learn, affine augmentation, the training loop, weight files."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn import metrics as skm

from gestalt_al.models import ModelConfig, build_model, load_model, save_model
from gestalt_al.models.config import Task
from gestalt_al.training import (
    AffineParams,
    AugmentConfig,
    EpochRecord,
    TrainConfig,
    apply_affine,
    augment_batch,
    classification_metrics,
    evaluate,
    predict_probabilities,
    sample_affine_params,
    train_task_model,
)

SIZE = 28
RESNET = {
    task: ModelConfig("resnet18", num_classes=2, task=task, image_size=SIZE)
    for task in ("multi_class", "multi_label")
}
IDENTITY = AugmentConfig(max_rotation_deg=0, max_translate=0, scale_range=(1, 1))
# Few distinct values, so tied scores are common.
SCORE_VALUES = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])


# --- metrics --------------------------------------------------------------------------------


@st.composite
def multi_label_cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Scores [N, K] and multi-hot labels in which every class has both outcomes."""
    n, k = draw(st.integers(2, 12)), draw(st.integers(1, 5))
    scores = np.array(draw(st.lists(SCORE_VALUES, min_size=n * k, max_size=n * k)))
    labels = np.array(draw(st.lists(st.integers(0, 1), min_size=n * k, max_size=n * k)))
    labels = labels.reshape(n, k)
    labels[0], labels[1] = 1, 0
    return scores.reshape(n, k), labels


@st.composite
def multi_class_cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Softmax scores [N, K >= 3] and class indices in which every class occurs."""
    k = draw(st.integers(3, 5))
    n = draw(st.integers(k + 1, 12))
    logits = np.array(draw(st.lists(SCORE_VALUES, min_size=n * k, max_size=n * k)))
    exp = np.exp(4.0 * logits.reshape(n, k))
    rest = draw(st.lists(st.integers(0, k - 1), min_size=n - k, max_size=n - k))
    return exp / exp.sum(axis=1, keepdims=True), np.array([*range(k), *rest])


@given(multi_label_cases())
def test_multi_label_metrics_equal_sklearn(case: tuple[np.ndarray, np.ndarray]) -> None:
    scores, labels = case
    got = classification_metrics(scores, labels, "multi_label")
    np.testing.assert_allclose(got.per_class_auc, skm.roc_auc_score(labels, scores, average=None))
    assert got.macro_auc == pytest.approx(skm.roc_auc_score(labels, scores, average="macro"))
    assert got.mean_average_precision == pytest.approx(
        skm.average_precision_score(labels, scores, average="macro")
    )
    assert got.num_scored_classes == labels.shape[1]
    assert got.accuracy is None
    if labels.shape[1] == 1:  # nothing to rank within a sample; sklearn refuses [N, 1]
        assert got.label_ranking_average_precision is None
        assert got.ranking_loss is None
        return
    assert got.label_ranking_average_precision == pytest.approx(
        skm.label_ranking_average_precision_score(labels, scores)
    )
    assert got.ranking_loss == pytest.approx(skm.label_ranking_loss(labels, scores))


@given(multi_class_cases())
def test_multi_class_metrics_equal_sklearn_one_vs_rest(
    case: tuple[np.ndarray, np.ndarray],
) -> None:
    scores, labels = case
    got = classification_metrics(scores, labels, "multi_class")
    one_hot = np.eye(scores.shape[1])[labels]
    assert got.macro_auc == pytest.approx(
        skm.roc_auc_score(labels, scores, multi_class="ovr", average="macro")
    )
    np.testing.assert_allclose(got.per_class_auc, skm.roc_auc_score(one_hot, scores, average=None))
    assert got.mean_average_precision == pytest.approx(
        skm.average_precision_score(one_hot, scores, average="macro")
    )
    assert got.accuracy == pytest.approx(skm.accuracy_score(labels, scores.argmax(axis=1)))
    assert got.label_ranking_average_precision is None
    assert got.ranking_loss is None


@pytest.mark.parametrize("seed", range(5))
def test_binary_multi_class_auc_is_the_positive_class_auc(seed: int) -> None:
    rng = np.random.default_rng(seed)
    positive = rng.random(40)
    labels = np.r_[0, 1, rng.integers(0, 2, 38)]
    got = classification_metrics(np.c_[1 - positive, positive], labels, "multi_class")
    expected = skm.roc_auc_score(labels, positive)
    assert got.per_class_auc == pytest.approx((expected, expected))
    assert got.macro_auc == pytest.approx(expected)


def test_multi_label_golden_case() -> None:
    scores = np.array([[0.9, 0.2], [0.8, 0.7], [0.6, 0.3]])
    labels = np.array([[1, 0], [0, 1], [1, 1]])
    got = classification_metrics(scores, labels, "multi_label")
    # Class 0: positives 0.9, 0.6 vs negative 0.8 -> 1 of 2 pairs ordered: AUC 1/2.
    #   AP: ranks 0.9(+) 0.8(-) 0.6(+) -> precision 1 at recall 1/2, 2/3 at recall 1 -> 5/6.
    # Class 1: positives 0.7, 0.3 vs negative 0.2 -> both ordered: AUC 1, AP 1.
    assert got.per_class_auc == pytest.approx((0.5, 1.0))
    assert got.macro_auc == pytest.approx(0.75)
    assert got.mean_average_precision == pytest.approx((5 / 6 + 1) / 2)
    # LRAP per sample: 1 (0.9 on top), 1/2 (relevant 0.7 below irrelevant 0.8), 1 (all relevant).
    assert got.label_ranking_average_precision == pytest.approx(5 / 6)
    # Ranking loss: only sample 1 has a misordered (relevant, irrelevant) pair: 1/3.
    assert got.ranking_loss == pytest.approx(1 / 3)
    assert got.num_scored_classes == 2


def test_multi_class_golden_case() -> None:
    scores = np.array([[0.7, 0.3], [0.4, 0.6], [0.55, 0.45]])
    labels = np.array([0, 1, 1])
    got = classification_metrics(scores, labels, "multi_class")
    # Class 1 scores 0.6, 0.45 (positives) all above 0.3 (negative): AUC 1, AP 1, and
    # class 0 is its mirror. Argmax predicts 0, 1, 0: two of three right.
    assert got.per_class_auc == (1.0, 1.0)
    assert got.mean_average_precision == 1.0
    assert got.accuracy == pytest.approx(2 / 3)


def test_constant_class_is_nan_and_left_out_of_the_means() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random((20, 3))
    labels = np.c_[rng.integers(0, 2, (20, 2)), np.zeros(20, dtype=int)]
    labels[:2, :2] = [[0, 0], [1, 1]]
    got = classification_metrics(scores, labels, "multi_label")
    assert math.isnan(got.per_class_auc[2])
    assert got.num_scored_classes == 2
    scorable = skm.roc_auc_score(labels[:, :2], scores[:, :2], average=None)
    assert got.per_class_auc[:2] == pytest.approx(tuple(scorable))
    assert got.macro_auc == pytest.approx(scorable.mean())
    assert got.mean_average_precision == pytest.approx(
        skm.average_precision_score(labels[:, :2], scores[:, :2], average="macro")
    )
    logged = got.as_dict()
    assert logged["per_class_auc"] == [*scorable.tolist(), None]
    json.dumps(logged, allow_nan=False)


def test_absent_multi_class_class_is_nan() -> None:
    scores = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.2, 0.3]])
    got = classification_metrics(scores, np.array([0, 1, 0]), "multi_class")
    assert math.isnan(got.per_class_auc[2])
    assert got.per_class_auc[:2] == (1.0, 1.0)
    assert (got.macro_auc, got.num_scored_classes) == (1.0, 2)


GOOD_SCORES = np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])


@pytest.mark.parametrize(
    ("scores", "labels", "task", "message"),
    [
        (np.array([0.2, 0.8]), np.array([0, 1]), "multi_class", r"must be \[N, K\]"),
        (np.zeros((0, 2)), np.zeros(0, dtype=int), "multi_class", r"N >= 1"),
        (np.array([[0.2], [0.8]]), np.array([0, 1]), "multi_class", "K >= 2"),
        (np.array([[1, 0], [0, 1]]), np.array([0, 1]), "multi_class", "floating point"),
        (np.array([[0.2, np.nan], [0.6, 0.4]]), np.array([0, 1]), "multi_class", "index 0"),
        (GOOD_SCORES, np.array([0, 1, 1]), "multi_label", r"\[N, K\] multi-hot shaped \[3, 2\]"),
        (GOOD_SCORES, np.array([[0, 2], [1, 0], [0, 1]]), "multi_label", r"0/1, found \[2.0\]"),
        (GOOD_SCORES, np.eye(3, 2), "multi_class", r"\[N\] class indices shaped \[3\]"),
        (GOOD_SCORES, np.array([0, 2, 1]), "multi_class", r"0\.\.1, found \[2.0\]"),
        (GOOD_SCORES, np.array([0, 0.5, 1]), "multi_class", r"found \[0.5\]"),
        (GOOD_SCORES, np.array(["a", "b", "a"]), "multi_class", "must be numbers"),
        (GOOD_SCORES, np.ones((3, 2)), "multi_label", "no class has both"),
        (GOOD_SCORES, np.array([1, 1, 1]), "multi_class", "no class has both"),
        (GOOD_SCORES, np.array([0, 1, 1]), "binary", "task must be one of"),
    ],
)
def test_metric_input_errors(
    scores: np.ndarray, labels: np.ndarray, task: Task, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        classification_metrics(scores, labels, task)


# --- augmentation ---------------------------------------------------------------------------


def _params(
    rotation: float, translate: tuple[float, float] = (0, 0), scale: float = 1.0
) -> AffineParams:
    return AffineParams(torch.tensor([rotation]), torch.tensor([translate]), torch.tensor([scale]))


def _random_images(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_default_augmentation_is_the_papers_recipe() -> None:
    config = AugmentConfig()
    assert config.max_rotation_deg == 25
    assert config.max_translate * 320 == pytest.approx(10)
    assert config.scale_range == (0.95, 1.05)


def test_identity_config_reproduces_the_input() -> None:
    images = _random_images((6, 3, SIZE, 20))
    out = augment_batch(images, IDENTITY, torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("degrees", "quarter_turns"), [(90, 1), (-90, -1), (180, 2)])
def test_right_angle_rotation_is_rot90_counter_clockwise(
    degrees: float, quarter_turns: int
) -> None:
    image = _random_images((1, 1, 12, 12))
    out = apply_affine(image, _params(degrees))
    expected = np.rot90(image[0, 0].numpy(), k=quarter_turns)  # counter-clockwise on screen
    np.testing.assert_allclose(out[0, 0].numpy(), expected, atol=1e-5)


def test_rotation_moves_mass_from_right_to_top() -> None:
    image = torch.zeros(1, 1, 16, 16)
    image[..., 6:10, 11:15] = 1.0  # a block in the right half, vertically centred
    out = apply_affine(image, _params(90))[0, 0]
    assert float(out[:8].sum()) == pytest.approx(float(image.sum()), abs=1e-4)
    assert float(out[8:].sum()) == pytest.approx(0.0, abs=1e-4)


def test_rotation_keeps_shape_on_non_square_images() -> None:
    image = torch.zeros(1, 1, 16, 32)
    image[..., 6:10, 14:18] = 1.0  # a centred square maps onto itself under a quarter turn
    torch.testing.assert_close(apply_affine(image, _params(90)), image, atol=1e-5, rtol=0)


def test_translation_is_a_fraction_of_the_size() -> None:
    image = _random_images((1, 1, 8, 16))
    out = apply_affine(image, _params(0, translate=(0.25, -0.25)))
    expected = torch.zeros_like(image)  # right by 4 px, up by 2 px, zeros shifted in
    expected[..., :6, 4:] = image[..., 2:, :12]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_scale_two_magnifies_the_centre() -> None:
    image = torch.zeros(1, 1, 16, 16)
    image[..., 6:10, 6:10] = 1.0
    out = apply_affine(image, _params(0, scale=2.0))
    expected = torch.zeros_like(image)
    expected[..., 4:12, 4:12] = 1.0
    # Bilinear sampling blurs the new edge by half a pixel; the interior is exact.
    torch.testing.assert_close(out[..., 5:11, 5:11], expected[..., 5:11, 5:11])
    assert float(out.sum()) == pytest.approx(4 * float(image.sum()), rel=0.05)


def test_each_sample_gets_its_own_draw_within_the_ranges() -> None:
    config = AugmentConfig()
    params = sample_affine_params(256, config, torch.Generator().manual_seed(0))
    assert torch.unique(params.rotation_deg).numel() == 256
    assert float(params.rotation_deg.abs().max()) <= 25
    assert float(params.rotation_deg.abs().max()) > 20  # the range is used, not just bounded
    assert float(params.translate.abs().max()) <= 10 / 320
    assert 0.95 <= float(params.scale.min()) <= float(params.scale.max()) <= 1.05
    same = _random_images((1, 1, SIZE, SIZE)).expand(4, -1, -1, -1)
    out = augment_batch(same, config, torch.Generator().manual_seed(0))
    assert all(not torch.allclose(out[i], out[j]) for i in range(4) for j in range(i))


def test_same_seed_same_augmentation() -> None:
    images = _random_images((5, 1, SIZE, SIZE))
    first = augment_batch(images, AugmentConfig(), torch.Generator().manual_seed(7))
    again = augment_batch(images, AugmentConfig(), torch.Generator().manual_seed(7))
    other = augment_batch(images, AugmentConfig(), torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@given(st.integers(0, 2**32 - 1))
def test_output_stays_in_unit_range(seed: int) -> None:
    images = _random_images((3, 1, 12, 12), seed)
    images[0] = 1.0
    wild = AugmentConfig(max_rotation_deg=180, max_translate=0.5, scale_range=(0.3, 3.0))
    out = augment_batch(images, wild, torch.Generator().manual_seed(seed))
    assert float(out.min()) >= 0.0
    assert float(out.max()) <= 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_rotation_deg": -1.0}, ">= 0"),
        ({"max_translate": -0.1}, ">= 0"),
        ({"max_translate": math.nan}, "finite"),
        ({"scale_range": (0.0, 1.0)}, "0 < low <= high"),
        ({"scale_range": (1.1, 1.0)}, "0 < low <= high"),
    ],
)
def test_augment_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AugmentConfig(**kwargs)  # type: ignore[arg-type]


def test_apply_affine_needs_a_float_batch() -> None:
    with pytest.raises(ValueError, match=r"float \[B, C, H, W\]"):
        apply_affine(torch.zeros(1, 12, 12), _params(0))


# --- training -------------------------------------------------------------------------------


def _squares(n: int, task: Task, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 28 px images; a bright square in the left (class 0) or right (class 1) half.

    Multi-class images have exactly one square; multi-label images have any subset.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, size=(n, SIZE, SIZE), dtype=np.uint8)
    if task == "multi_class":
        labels = rng.permutation(np.arange(n) % 2)
        present = np.eye(2, dtype=np.int64)[labels]
    else:
        present = rng.integers(0, 2, size=(n, 2))
        present[:4] = [[0, 0], [0, 1], [1, 0], [1, 1]]
        labels = present
    for i, side in zip(*np.nonzero(present), strict=True):
        row, col = rng.integers(6, 16), rng.integers(3, 7) + 15 * side
        images[i, row : row + 6, col : col + 6] = 220
    return images, labels


def _quick(**overrides: object) -> TrainConfig:
    settings: dict[str, object] = {"learning_rate": 1e-3, "batch_size": 8, "max_epochs": 2}
    return TrainConfig(**(settings | overrides))  # type: ignore[arg-type]


@pytest.mark.parametrize("task", ["multi_class", "multi_label"])
def test_learns_a_separable_task(task: Task) -> None:
    config = RESNET[task]
    train_x, train_y = _squares(48, task, seed=0)
    val_x, val_y = _squares(24, task, seed=1)
    result = train_task_model(
        config,
        train_x,
        train_y,
        val_x,
        val_y,
        _quick(max_epochs=4, patience=2),
        show_progress=False,
    )
    assert result.best_metrics.macro_auc > 0.9
    assert not result.model.training
    assert result.best_metrics == result.history[result.best_epoch - 1].val_metrics
    # The returned model carries the best epoch's weights: re-evaluating reproduces its score.
    assert evaluate(result.model, val_x, val_y, config).macro_auc == result.best_metrics.macro_auc
    test_x, test_y = _squares(24, task, seed=2)
    assert evaluate(result.model, test_x, test_y, config).macro_auc > 0.9


def test_stops_patience_epochs_after_the_best_and_restores_it() -> None:
    config = RESNET["multi_class"]
    train_x, train_y = _squares(8, "multi_class", seed=0)
    # Identical validation images get identical scores: AUC is 0.5 every epoch, so epoch 1
    # stays the best and training must stop after exactly 1 + patience epochs.
    val_x, val_y = np.repeat(train_x[:1], 4, axis=0), np.array([0, 1, 0, 1])
    seen: list[EpochRecord] = []
    result = train_task_model(
        config,
        train_x,
        train_y,
        val_x,
        val_y,
        _quick(max_epochs=10, patience=2),
        on_epoch_end=seen.append,
        show_progress=False,
    )
    assert [record.epoch for record in result.history] == [1, 2, 3]
    assert seen == result.history
    assert result.best_epoch == 1
    assert all(record.val_metrics.macro_auc == 0.5 for record in seen)
    assert all(record.seconds > 0 and math.isfinite(record.train_loss) for record in seen)
    one_epoch = train_task_model(
        config, train_x, train_y, val_x, val_y, _quick(max_epochs=1), show_progress=False
    )
    _assert_same_weights(result.model, one_epoch.model)


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    config = RESNET["multi_label"]
    train_x, train_y = _squares(12, "multi_label", seed=0)
    val_x, val_y = _squares(6, "multi_label", seed=1)

    def run(seed: int) -> torch.nn.Module:
        settings = _quick(max_epochs=1, seed=seed)
        return train_task_model(
            config, train_x, train_y, val_x, val_y, settings, show_progress=False
        ).model

    _assert_same_weights(run(3), run(3))
    assert not torch.equal(_flat(run(3)), _flat(run(4)))


def test_training_leaves_the_global_rng_alone() -> None:
    train_x, train_y = _squares(4, "multi_class", seed=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_task_model(
        RESNET["multi_class"],
        train_x,
        train_y,
        train_x,
        train_y,
        _quick(max_epochs=1),
        show_progress=False,
    )
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("batch_size", "message"),
    [
        (4, "diverged in epoch 1 \\(mean loss nan\\)"),  # the second step's loss is NaN
        (8, "NaN or inf probabilities"),  # one finite step, then NaN validation outputs
    ],
)
def test_divergence_is_reported(batch_size: int, message: str) -> None:
    train_x, train_y = _squares(8, "multi_class", seed=0)
    settings = _quick(learning_rate=1e30, batch_size=batch_size, max_epochs=1)
    with pytest.raises(FloatingPointError, match=message):
        train_task_model(
            RESNET["multi_class"],
            train_x,
            train_y,
            train_x,
            train_y,
            settings,
            show_progress=False,
        )


def test_epoch_record_logs_flat_values() -> None:
    train_x, train_y = _squares(4, "multi_label", seed=0)
    result = train_task_model(
        RESNET["multi_label"],
        train_x,
        train_y,
        train_x,
        train_y,
        _quick(max_epochs=1),
        show_progress=False,
    )
    logged = result.history[0].as_dict()
    assert logged["epoch"] == 1
    assert logged["val_macro_auc"] == result.best_metrics.macro_auc
    assert logged["val_accuracy"] is None
    json.dumps(logged, allow_nan=False)


def test_predict_probabilities_shape_and_mode() -> None:
    config = RESNET["multi_class"]
    model = build_model(config).train()
    images, _ = _squares(5, "multi_class", seed=0)
    probs = predict_probabilities(model, images, config, batch_size=2)
    assert probs.shape == (5, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.training  # the caller's mode is restored
    with pytest.raises(ValueError, match="empty"):
        predict_probabilities(model, images[:0], config)


def test_train_config_defaults_are_the_papers_recipe() -> None:
    settings = TrainConfig()
    assert (settings.learning_rate, settings.betas, settings.batch_size) == (
        1e-4,
        (0.93, 0.999),
        16,
    )
    assert settings.augment == AugmentConfig()
    assert (settings.max_epochs, settings.patience, settings.device) == (50, 5, "cpu")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"learning_rate": math.inf}, "learning_rate"),
        ({"betas": (1.0, 0.999)}, "betas"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"patience": 0}, "patience"),
        ({"eval_batch_size": 0}, "eval_batch_size"),
        ({"device": "tpu"}, "device"),
        ({"device": "not a device"}, "device"),
    ],
)
def test_train_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)  # type: ignore[arg-type]


def _bad_inputs() -> list[tuple[str, Task, dict[str, np.ndarray], str]]:
    images, labels = _squares(6, "multi_class", seed=0)
    multi_hot = np.eye(2, dtype=np.int64)[labels]
    nan_images = images / 255.0
    nan_images[2, 3, 4] = np.nan
    return [
        (
            "empty",
            "multi_class",
            {"train_images": images[:0], "train_labels": labels[:0]},
            "train_images: the set is empty",
        ),
        (
            "count",
            "multi_class",
            {"train_labels": labels[:-1]},
            r"train_labels: expected one label per image \(6\), got shape \[5\]",
        ),
        ("range", "multi_class", {"train_labels": labels + 1}, r"0\.\.1, found \[2.0\]"),
        (
            "form",
            "multi_label",
            {"train_labels": labels, "val_labels": multi_hot},
            r"train_labels: multi_label labels must be \[N, K\]",
        ),
        ("nan", "multi_class", {"train_images": nan_images}, "train_images: .*NaN"),
        (
            "dims",
            "multi_class",
            {"val_images": images[:, :, :, None, None]},
            r"val_images: images must be \[N, H, W\]",
        ),
        (
            "val",
            "multi_class",
            {"val_labels": np.zeros_like(labels)},
            "val_labels: no class has both",
        ),
    ]


@pytest.mark.parametrize(("case", "task", "bad", "message"), _bad_inputs())
def test_bad_training_inputs(
    case: str, task: Task, bad: dict[str, np.ndarray], message: str
) -> None:
    images, labels = _squares(6, "multi_class", seed=0)
    inputs = {
        "train_images": images,
        "train_labels": labels,
        "val_images": images,
        "val_labels": labels,
    } | bad
    with pytest.raises(ValueError, match=message):
        train_task_model(RESNET[task], **inputs, show_progress=False)  # type: ignore[arg-type]


def test_cuda_without_a_gpu_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    images, labels = _squares(4, "multi_class", seed=0)
    with pytest.raises(ValueError, match="CUDA is not available"):
        train_task_model(
            RESNET["multi_class"],
            images,
            labels,
            images,
            labels,
            _quick(device="cuda"),
            show_progress=False,
        )


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([tensor.flatten().float() for tensor in model.state_dict().values()])


def _assert_same_weights(first: torch.nn.Module, second: torch.nn.Module) -> None:
    assert first.state_dict().keys() == second.state_dict().keys()
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name


# --- weight files ---------------------------------------------------------------------------

EXECUTED: list[str] = []


def _record_execution(marker: str) -> None:
    EXECUTED.append(marker)


class Payload:
    """Unpickling this would run code (``_record_execution``); a safe loader never does."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return _record_execution, ("payload ran",)


def _saved(tmp_path: Path) -> tuple[torch.nn.Module, ModelConfig, Path]:
    config = RESNET["multi_label"]
    torch.manual_seed(0)
    model = build_model(config).eval()
    path = tmp_path / "model.pt"
    save_model(model, config, path)
    return model, config, path


def test_save_load_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model, config, path = _saved(tmp_path)
    loaded, loaded_config = load_model(path)
    assert loaded_config == config
    assert not loaded.training
    images, _ = _squares(6, "multi_label", seed=0)
    np.testing.assert_array_equal(
        predict_probabilities(loaded, images, config), predict_probabilities(model, images, config)
    )


def test_load_refuses_pickled_objects_without_running_them(tmp_path: Path) -> None:
    model, config, _ = _saved(tmp_path)
    with_object = tmp_path / "with_object.pt"
    torch.save(
        {"config": config.to_dict(), "state_dict": model.state_dict(), "x": Payload()}, with_object
    )
    plain_pickle = tmp_path / "plain.pkl"
    plain_pickle.write_bytes(pickle.dumps(Payload()))
    for path in (with_object, plain_pickle):
        with pytest.raises(ValueError, match="not a gestalt-al model file"):
            load_model(path)
    assert EXECUTED == []


def test_load_refuses_a_truncated_file(tmp_path: Path) -> None:
    _, _, path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a gestalt-al model file"):
        load_model(path)
