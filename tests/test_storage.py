"""The object store: both backends behind one contract, key validation, and an S3 outage
(the server stopped, then started again on the same data) that loses nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from minio import Minio

from gestalt_al.storage import (
    ObjectNotFoundError,
    ObjectStore,
    S3Location,
    S3Settings,
    StoreAccessError,
    StoreUnavailableError,
    join_key,
    open_store,
    parse_location,
    validate_key,
)
from gestalt_al.storage.store import LocalStore, S3Store
from tests.servers import S3Endpoint, free_port, nanio_server


def _settings(endpoint: S3Endpoint, secret: str | None = None) -> S3Settings:
    return S3Settings(
        endpoint.endpoint, endpoint.access_key, secret or endpoint.secret_key, False, "us-east-1"
    )


def _make_bucket(endpoint: S3Endpoint, bucket: str) -> None:
    client = Minio(endpoint.endpoint, access_key=endpoint.access_key,
                   secret_key=endpoint.secret_key, secure=False, region="us-east-1")  # fmt: skip
    client.make_bucket(bucket)


@pytest.fixture(scope="module")
def nanio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    with nanio_server(tmp_path_factory.mktemp("nanio")) as endpoint:
        _make_bucket(endpoint, "gestalt")
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, nanio: S3Endpoint) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return S3Store(S3Location("gestalt", f"test-{tmp_path.name}"), _settings(nanio))


def test_both_backends_keep_the_same_contract(store: ObjectStore) -> None:
    assert store.list("") == []
    store.put("pool/round-1/shard-0.bin", b"first")
    store.put("pool/round-1/shard-0.bin", b"replaced")
    store.put("pool/round-1/shard-1.bin", b"")
    store.put("pool/round-2/state.json", b"{}")
    assert store.get("pool/round-1/shard-0.bin") == b"replaced"
    assert store.get("pool/round-1/shard-1.bin") == b""
    assert store.exists("pool/round-2/state.json")
    assert not store.exists("pool/round-3/state.json")
    assert store.list("pool/round-1") == ["pool/round-1/shard-0.bin", "pool/round-1/shard-1.bin"]
    assert len(store.list("")) == 3
    store.delete("pool/round-1/shard-1.bin")
    store.delete("pool/round-1/shard-1.bin")  # deleting twice is fine
    with pytest.raises(ObjectNotFoundError, match=r"no object 'pool/round-1/shard-1\.bin'"):
        store.get("pool/round-1/shard-1.bin")
    for bad in ("../escape", "/absolute", "a//b", "a/./b", "a/b/", "space here", ""):
        with pytest.raises(ValueError, match="object key"):
            store.put(bad, b"x")


@given(st.lists(st.sampled_from(["a", "..", ".", "", "b-1", "x y", "%2e", "ok.bin"]),
                min_size=1, max_size=4))  # fmt: skip
def test_valid_keys_never_climb_out(parts: list[str]) -> None:
    key = "/".join(parts)
    try:
        validate_key(key)
    except ValueError:
        return
    assert not key.startswith("/")
    assert all(part not in ("", ".", "..") for part in key.split("/"))
    assert (Path("/root") / key).resolve().is_relative_to("/root")


def test_locations_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert parse_location(str(tmp_path)) is None
    assert parse_location("s3://gestalt/runs/a/") == S3Location("gestalt", "runs/a")
    assert parse_location("s3://gestalt") == S3Location("gestalt", "")
    for bad in ("s3://UPPER/x", "s3://ok-bucket/../etc", "s3://ok-bucket/a b", "s3://ok/x"):
        with pytest.raises(ValueError, match="s3://bucket/prefix"):
            parse_location(bad)
    monkeypatch.delenv("GESTALT_S3_SECRET_KEY", raising=False)
    with pytest.raises(ValueError, match="GESTALT_S3_SECRET_KEY"):
        open_store("s3://gestalt/x")
    monkeypatch.setenv("GESTALT_S3_ENDPOINT", "h:1")
    monkeypatch.setenv("GESTALT_S3_ACCESS_KEY", "access")
    monkeypatch.setenv("GESTALT_S3_SECRET_KEY", "very-secret")
    for value, secure in (("", True), ("false", False), ("0", False), ("On", True)):
        monkeypatch.setenv("GESTALT_S3_SECURE", value)
        assert S3Settings.from_environment("test").secure is secure
    monkeypatch.setenv("GESTALT_S3_SECURE", "maybe")
    with pytest.raises(ValueError, match="GESTALT_S3_SECURE='maybe'"):
        S3Settings.from_environment("test")
    assert join_key("pool", "round-1/", "shard.bin") == "pool/round-1/shard.bin"
    settings = S3Settings("h:1", "access", "very-secret", False, "us-east-1")
    assert "very-secret" not in repr(settings)


def test_wrong_credentials_are_refused(nanio: S3Endpoint) -> None:
    store = S3Store(S3Location("gestalt", "x"), _settings(nanio, secret="wrong"))
    with pytest.raises(StoreAccessError, match="refused the credentials"):
        store.put("a.bin", b"x")


def test_an_outage_fails_cleanly_and_loses_nothing(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "s3", free_port()
    with nanio_server(data_dir, port) as endpoint:
        _make_bucket(endpoint, "gestalt")
        store = S3Store(S3Location("gestalt", "round"), _settings(endpoint), retries=2,
                        backoff_seconds=0.05, timeout_seconds=2)  # fmt: skip
        store.put("written-before.bin", b"kept")
    with pytest.raises(
        StoreUnavailableError, match=r"unreachable while trying to write 'during\.bin'"
    ):
        store.put("during.bin", b"lost?")
    with pytest.raises(StoreUnavailableError, match="retry when it is back"):
        store.get("written-before.bin")
    with nanio_server(data_dir, port):
        assert store.get("written-before.bin") == b"kept"
        assert not store.exists("during.bin")
        store.put("during.bin", b"now")
        assert store.list("") == ["during.bin", "written-before.bin"]
    missing_bucket = S3Store(S3Location("absent", ""), _settings(endpoint))
    with nanio_server(data_dir, port), pytest.raises(StoreUnavailableError, match="does not exist"):
        missing_bucket.get("x")
