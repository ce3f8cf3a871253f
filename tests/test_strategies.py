"""Query strategies: hand-computed uncertainty values, MC-dropout properties, the GESTALT
ablations, and the one contract (scores -> top-b selection)."""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gestalt_al.data import bundled_nih_path, load_dataset
from gestalt_al.models import ModelConfig, as_model_input, build_model
from gestalt_al.ranking import gestalt_scores
from gestalt_al.saliency import canonize
from gestalt_al.strategies import STRATEGY_NAMES, QueryContext, build_strategy, query
from gestalt_al.strategies.confidence import class_distributions, uncertainty
from gestalt_al.strategies.gestalt import GestaltStrategy, class_weighted_features
from gestalt_al.strategies.mc_dropout import MCDropout, dropout_samples
from gestalt_al.training import TrainConfig, train_task_model

probs = arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(2, 5)),
               elements=st.floats(0.001, 0.999))  # fmt: skip


def test_uncertainty_measures_by_hand() -> None:
    softmax = np.array([[0.5, 0.5], [0.9, 0.1], [0.6, 0.3]])
    softmax[2, 1] = 0.4
    d = class_distributions(softmax, multi_label=False)

    def h(p: float) -> float:
        return -(p * math.log(p) + (1 - p) * math.log(1 - p))

    assert np.allclose(uncertainty(d, "entropy"), [math.log(2), h(0.9), h(0.6)])
    assert np.allclose(uncertainty(d, "margin"), [1.0, 0.2, 0.8])
    assert np.allclose(uncertainty(d, "least_confidence"), [0.5, 0.1, 0.4])
    # Multi-label: each finding is a binary problem, averaged over findings.
    sigmoid = np.array([[0.5, 0.9]])
    assert np.allclose(uncertainty(class_distributions(sigmoid, True), "least_confidence"), [0.3])
    assert np.allclose(uncertainty(class_distributions(sigmoid, True), "margin"), [0.6])


@given(probs)
def test_entropy_is_highest_for_the_uniform_prediction(p: np.ndarray) -> None:
    softmax = p / p.sum(axis=1, keepdims=True)
    uniform = np.full((1, p.shape[1]), 1.0 / p.shape[1])
    ours = uncertainty(class_distributions(softmax, False), "entropy")
    top = uncertainty(class_distributions(uniform, False), "entropy")[0]
    assert np.all(ours <= top + 1e-12)


@functools.cache
def _context(arch: str = "small_cnn") -> QueryContext:
    data = load_dataset(bundled_nih_path(), "train", "images")
    config = ModelConfig(arch, data.num_classes, image_size=28)  # type: ignore[arg-type]
    labeled, pool = data.subset(np.arange(40)), data.subset(np.arange(40, 100))
    assert labeled.labels is not None
    trained = train_task_model(config, labeled.images, labeled.labels, labeled.images,
                               labeled.labels, TrainConfig(max_epochs=2, learning_rate=1e-3),
                               show_progress=False)  # fmt: skip
    return QueryContext(trained.model, config, labeled, pool, seed=3)


def test_mc_dropout_passes_differ_and_repeat_with_the_seed() -> None:
    context = _context()
    first, again = dropout_samples(context, passes=4), dropout_samples(context, passes=4)
    assert first.shape == (4, len(context.pool), 14)
    assert np.array_equal(first, again)
    assert not np.allclose(first[0], first[1])  # dropout is on
    assert context.model.training is False  # the mode is restored


def test_bald_is_zero_without_disagreement_and_variance_is_eq_9() -> None:
    context = _context()
    samples = dropout_samples(context, passes=20)
    expected = samples.var(axis=0).sum(axis=1)  # (1/T) sum y^2 - ((1/T) sum y)^2, per class
    assert np.allclose(MCDropout("variance").scores(context), expected)
    assert np.all(MCDropout("bald").scores(context) >= -1e-12)  # Jensen: H(mean) >= mean H


def test_mc_dropout_refuses_a_model_without_dropout() -> None:
    context = _context()
    plain = QueryContext(build_model(ModelConfig("resnet18", 14, image_size=28)), context.config,
                         context.labeled, context.pool, 0)  # fmt: skip
    with pytest.raises(ValueError, match="dropout"):
        MCDropout().scores(plain)


def test_inverted_gestalt_is_the_negated_ranking() -> None:
    context = _context()
    straight = GestaltStrategy("weighted_node").scores(context)
    assert np.array_equal(
        GestaltStrategy("weighted_node", inverted=True).scores(context), -straight
    )
    top = query(GestaltStrategy("weighted_node"), context, 5)
    bottom = query(GestaltStrategy("weighted_node", inverted=True), context, 5)
    assert set(top.indices).isdisjoint(bottom.indices)


def test_weighted_node_without_a_prior_is_node() -> None:
    """A model whose class maps do not vary over the labeled set leaves Eqs. 6-8 undefined
    (this stopped an NIH simulation round): Weighted-Node then ranks like Node."""
    context = _context()
    flat = dataclasses.replace(context.labeled, images=np.zeros_like(context.labeled.images))
    dead = dataclasses.replace(context, labeled=flat)
    weighted = GestaltStrategy("weighted_node", features="image").scores(dead)
    assert np.array_equal(weighted, GestaltStrategy("node", features="image").scores(dead))
    assert not np.array_equal(
        GestaltStrategy("weighted_node", features="image").scores(context),
        GestaltStrategy("node", features="image").scores(context),
    )


def test_image_feature_nodes_are_class_weighted_pooled_features() -> None:
    context = _context()
    net = canonize(context.model)
    images = as_model_input(context.pool.images[:3], context.config)
    nodes = class_weighted_features(net, images)
    with torch.no_grad():
        pooled = net.head.pool(net.features(images)).flatten(1)
    weights = net.head.classifier.weight
    assert nodes.shape == (3, 14, weights.shape[1])
    assert np.allclose(nodes[1, 4], (pooled[1] * weights[4]).numpy())
    scores = GestaltStrategy("node", features="image").scores(context)
    full = class_weighted_features(net, as_model_input(context.pool.images, context.config))
    assert np.allclose(scores, gestalt_scores(full, "node"))


@pytest.mark.parametrize("name", [n for n in STRATEGY_NAMES if n not in ("mvaal", "margin",
                                  "least_confidence")])  # fmt: skip
def test_every_strategy_keeps_the_contract(name: str) -> None:
    context = _context()
    strategy = build_strategy(name, 28, sampler_epochs=1)
    selection = query(strategy, context, 7)
    assert strategy.name == name
    assert selection.indices.shape == (7,)
    assert len(set(selection.indices)) == 7
    assert np.all(np.diff(selection.scores) <= 0)
    assert set(selection.indices) <= set(range(len(context.pool)))


def test_mvaal_needs_a_second_modality_and_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="auxiliary modality"):
        build_strategy("mvaal", 28, 1).scores(_context())
    with pytest.raises(ValueError, match="unknown strategy 'coreset'"):
        build_strategy("coreset", 28)
