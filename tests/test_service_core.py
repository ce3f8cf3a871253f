"""The service's stored state and math without Ray: pools, labels, round ids, shard results,
and global strategy scores over shards equal to the single-array ranking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gestalt_al.ranking import gestalt_scores
from gestalt_al.service.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
)
from gestalt_al.service.labels import LabelBook
from gestalt_al.service.pool import PoolCatalog, pool_images, write_pool
from gestalt_al.service.rounds import parse_round_id, round_id_for
from gestalt_al.service.shard_results import RoundResults, ShardScores, index_latents
from gestalt_al.service.strategies import round_scores
from gestalt_al.storage import StoreUnavailableError
from gestalt_al.storage.store import LocalStore

NAMES = ("a", "b", "c")


def _pool(tmp_path: Path, n: int = 10, shard_size: int = 4) -> tuple[PoolCatalog, np.ndarray]:
    ids = np.array([f"s{i:03d}" for i in range(n)])
    images = np.random.default_rng(0).integers(0, 255, (n, 8, 8), dtype=np.uint8)
    write_pool(LocalStore(tmp_path / "data"), "pool", list(ids), images, NAMES, shard_size)
    catalog = PoolCatalog(LocalStore(tmp_path / "service"))
    catalog.register("p", str(tmp_path / "data" / "pool"))
    return catalog, ids


def test_pool_registration_records_shards_and_refuses_bad_pools(tmp_path: Path) -> None:
    catalog, _ = _pool(tmp_path)
    manifest = catalog.manifest("p")
    assert [(s.start, s.count) for s in manifest.shards] == [(0, 4), (4, 4), (8, 2)]
    assert manifest.num_samples == 10
    assert manifest.label_names == NAMES
    assert catalog.indices_of("p", ["s009", "s000"]).tolist() == [9, 0]
    # The same registration again is a no-op; another uri under the id is refused.
    assert catalog.register("p", manifest.uri) == manifest
    with pytest.raises(AlreadyExistsError, match="register"):
        catalog.register("p", str(tmp_path))
    with pytest.raises(NotFoundError, match="not in pool"):
        catalog.indices_of("p", ["nope"])
    with pytest.raises(NotFoundError, match="register it first"):
        catalog.manifest("unknown")
    with pytest.raises(InvalidArgumentError, match="pool id"):
        catalog.register("../etc", manifest.uri)
    with pytest.raises(NotFoundError, match=r"no \.npz shards"):
        catalog.register("empty", str(tmp_path / "nothing-here"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.npz").write_bytes(b"not a zip file")
    with pytest.raises(InvalidArgumentError, match=r"not a readable \.npz shard"):
        catalog.register("bad", str(tmp_path / "bad"))


def test_labels_are_idempotent_refuse_conflicts_and_survive_a_restart(tmp_path: Path) -> None:
    catalog, _ = _pool(tmp_path)
    book = LabelBook(catalog)
    assert book.submit("p", [("s001", [1, 0, 0]), ("s002", [0, 1, 1])], "", "dr-a") == (2, 0)
    assert book.submit("p", [("s001", [1, 0, 0])]) == (0, 1)  # the same again: no change
    with pytest.raises(AlreadyExistsError, match="nothing from this request was stored"):
        book.submit("p", [("s003", [1, 1, 1]), ("s002", [0, 0, 1])])
    with pytest.raises(InvalidArgumentError, match="expected 3 labels"):
        book.submit("p", [("s004", [1, 0])])
    with pytest.raises(InvalidArgumentError, match="0 or 1"):
        book.submit("p", [("s004", [1, 0, 0.5])])
    with pytest.raises(NotFoundError, match="not in pool"):
        book.submit("p", [("ghost", [1, 0, 0])])
    fresh = LabelBook(PoolCatalog(catalog.store))  # a restarted ingress reads the store
    assert fresh.labels("p") == {1: (1.0, 0.0, 0.0), 2: (0.0, 1.0, 1.0)}
    assert fresh.labeled_indices("p").tolist() == [1, 2]
    # A reader in another process (the loop coordinator) follows the writer with refresh.
    assert book.submit("p", [("s005", [0, 0, 1])]) == (1, 0)
    assert 5 not in fresh.labels("p")
    assert fresh.refresh("p")[5] == (0.0, 0.0, 1.0)


class _AnswerLostStore(LocalStore):
    """Stores the object, then fails as a network does when the answer of a write is lost:
    the one fault a real server cannot be made to produce on demand."""

    lose_next_answer = False

    def put(self, key: str, data: bytes) -> None:
        super().put(key, data)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise StoreUnavailableError(f"object store unreachable while writing {key!r}")


def test_a_label_write_whose_answer_was_lost_is_not_stored_twice(tmp_path: Path) -> None:
    _pool(tmp_path)  # registers pool "p" in the service store
    store = _AnswerLostStore(tmp_path / "service")
    book = LabelBook(PoolCatalog(store))
    labels = [("s001", [1, 0, 0]), ("s002", [0, 1, 1])]
    store.lose_next_answer = True
    with pytest.raises(StoreUnavailableError):
        book.submit("p", labels)
    assert book.submit("p", labels) == (0, 2), "the retry finds the labels that landed"
    assert len(store.list("pools/p/labels")) == 1


def test_pool_images_come_back_in_the_asked_order(tmp_path: Path) -> None:
    catalog, ids = _pool(tmp_path)
    images = np.random.default_rng(0).integers(0, 255, (10, 8, 8), dtype=np.uint8)
    wanted = np.array([9, 0, 5, 4])
    got = pool_images(catalog.manifest("p"), catalog.ids("p"), wanted)
    np.testing.assert_array_equal(got, images[wanted])
    with pytest.raises(InvalidArgumentError, match=r"0\.\.9"):
        pool_images(catalog.manifest("p"), ids, np.array([10]))


def test_round_ids_are_stable_and_checked() -> None:
    labeled = np.array([1, 5])
    first = round_id_for("p", "gestalt-r0000-aaaaaaaaaaaa", "", labeled)
    assert first == round_id_for("p", "gestalt-r0000-aaaaaaaaaaaa", "", labeled.copy())
    assert first != round_id_for("p", "gestalt-r0000-aaaaaaaaaaaa", "", np.array([1]))
    assert parse_round_id(first)[0] == "p"
    for bad in ("p", "p.xyz", "../p.0123456789ab", ""):
        with pytest.raises(InvalidArgumentError, match="not a round id"):
            parse_round_id(bad)


def _write_shards(store: LocalStore, latents: np.ndarray, sizes: list[int]) -> RoundResults:
    results = RoundResults(store, "round")
    start = 0
    for size in sizes:
        rows = np.arange(start, start + size)
        uncertainty, sampler = rows * 0.5, -rows.astype(float)
        results.write(f"{start:012d}", ShardScores(rows, latents[rows], uncertainty, sampler))
        start += size
    return results


@given(
    n=st.integers(6, 40),
    k=st.integers(2, 5),
    cuts=st.lists(st.integers(1, 39), max_size=4),
    seed=st.integers(0, 2**16),
    ties=st.booleans(),
)
def test_sharded_round_scores_equal_the_single_array_ranking(
    tmp_path_factory: pytest.TempPathFactory,
    n: int, k: int, cuts: list[int], seed: int, ties: bool,
) -> None:  # fmt: skip
    rng = np.random.default_rng(seed)
    latents = rng.normal(size=(n, k, 3)).astype(np.float32)
    if ties:  # repeated samples give exactly tied columns across shards
        latents[n // 2 :] = latents[: n - n // 2]
    bounds = sorted({c for c in cuts if c < n})
    sizes = np.diff([0, *bounds, n]).tolist()
    store = LocalStore(tmp_path_factory.mktemp("round"))
    results = _write_shards(store, latents, sizes)
    labeled = np.sort(rng.choice(n, size=3, replace=False))
    names = sorted(results.done())
    scores = round_scores(lambda: results.iter_weights(names), labeled, n, "vaal", "r")
    candidates = np.setdiff1d(np.arange(n), labeled)
    assert scores.candidates.tolist() == candidates.tolist()
    for strategy, variant in (("gestalt_node", "node"), ("gestalt_edge", "edge")):
        expected = gestalt_scores(latents[candidates], variant)
        np.testing.assert_array_equal(scores.scores[strategy], expected)
    if "gestalt_weighted_node" in scores.scores:
        expected = gestalt_scores(latents[candidates], "weighted_node", latents[labeled])
        np.testing.assert_array_equal(scores.scores["gestalt_weighted_node"], expected)
    np.testing.assert_array_equal(scores.scores["vaal"], candidates.astype(float))
    np.testing.assert_array_equal(scores.scores["uncertainty"], candidates * 0.5)


def test_shard_indexes_give_back_the_exact_latents(tmp_path: Path) -> None:
    latents = np.random.default_rng(1).normal(size=(7, 3, 4)).astype(np.float32)
    results = _write_shards(LocalStore(tmp_path), latents, [4, 3])
    assert results.done() == {f"{0:012d}", f"{4:012d}"}
    ids, stored = index_latents(results.index(f"{4:012d}"), 3)
    assert ids.tolist() == [4, 5, 6]
    np.testing.assert_array_equal(stored, latents[4:])
    # Rewriting a shard (a retried task) leaves the same objects.
    before = results.weights(f"{4:012d}")
    _write_shards(LocalStore(tmp_path), latents, [4, 3])
    np.testing.assert_array_equal(results.weights(f"{4:012d}").edges, before.edges)


def test_every_candidate_labeled_is_a_clear_error(tmp_path: Path) -> None:
    latents = np.ones((3, 2, 2), dtype=np.float32)
    results = _write_shards(LocalStore(tmp_path), latents, [3])
    with pytest.raises(ValueError, match="every pool sample is labeled"):
        round_scores(lambda: results.iter_weights(["000000000000"]), np.arange(3), 3, None, "r")
