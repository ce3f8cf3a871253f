"""Task-model training under Ray Train: two CPU workers, checkpoints in a folder and in an
S3 bucket, a worker killed mid-run, resumption, the versioned model of a round."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from minio import Minio

from gestalt_al.cli import main
from gestalt_al.data import bundled_nih_path, load_dataset
from gestalt_al.distributed.collectives import shard_indices
from gestalt_al.distributed.epochs import RayRun
from gestalt_al.distributed.registry import ModelRegistry
from gestalt_al.distributed.storage import checkpoint_storage
from gestalt_al.distributed.task_model import train_task_model_ray
from gestalt_al.models import ModelConfig
from gestalt_al.models.weights import model_from_state
from gestalt_al.training import TrainConfig, predict_probabilities
from tests.conftest import RayCluster
from tests.servers import S3Endpoint

CONFIG = ModelConfig("resnet18", 14, image_size=28)
pytestmark = pytest.mark.timeout(300)


def _nih(count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    train = load_dataset(bundled_nih_path(), "train", "images")
    val = load_dataset(bundled_nih_path(), "val", "images")
    assert train.labels is not None
    assert val.labels is not None
    return train.images[:count], train.labels[:count], val.images, val.labels


def test_shards_cover_the_set_and_have_equal_length() -> None:
    shards = [shard_indices(10, rank, 3) for rank in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    assert set(np.concatenate(shards)) == set(range(10))
    np.testing.assert_array_equal(shard_indices(5, 0, 1), np.arange(5))


def test_worker_killed_mid_run_resumes_from_its_checkpoint(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    pid_dir, storage = tmp_path / "pids", tmp_path / "checkpoints"
    pid_dir.mkdir()
    killed: list[int] = []

    def kill_rank_one_after_first_checkpoint() -> None:
        # Ray Train writes this snapshot once a checkpoint is registered (not merely uploaded).
        snapshot = storage / "killed" / "checkpoint_manager_snapshot.json"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            registered = snapshot.exists() and "checkpoint_" in snapshot.read_text()
            pid_file = pid_dir / "rank1.pid"
            if registered and pid_file.exists():
                pid = int(pid_file.read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_rank_one_after_first_checkpoint, daemon=True)
    killer.start()
    run = RayRun("killed", str(storage), num_workers=2, max_failures=2, worker_pid_dir=str(pid_dir))
    result = train_task_model_ray(
        CONFIG, *_nih(48), TrainConfig(max_epochs=3, patience=10, batch_size=12), run
    )
    killer.join(timeout=5)
    assert len(killed) == 1
    assert result.restarts == 1  # the worker group was restarted from a checkpoint
    assert [record["epoch"] for record in result.history] == [1.0, 2.0, 3.0]
    assert int((pid_dir / "rank1.pid").read_text()) != killed[0]  # a new worker finished it
    images = _nih(48)[2]
    probabilities = predict_probabilities(result.model, images, CONFIG)
    assert probabilities.shape == (len(images), 14)
    assert result.best_epoch == 1 + int(np.argmax([r["val_macro_auc"] for r in result.history]))


def test_checkpoints_and_models_go_to_the_bucket_and_a_rerun_resumes(
    ray_cluster: RayCluster, s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Minio(
        s3_endpoint.endpoint, access_key=s3_endpoint.access_key,
        secret_key=s3_endpoint.secret_key, secure=False, region="us-east-1",
    )  # fmt: skip
    client.make_bucket("gestalt-train")
    monkeypatch.setenv("GESTALT_S3_ENDPOINT", s3_endpoint.endpoint)
    monkeypatch.setenv("GESTALT_S3_ACCESS_KEY", s3_endpoint.access_key)
    monkeypatch.setenv("GESTALT_S3_SECRET_KEY", s3_endpoint.secret_key)
    monkeypatch.setenv("GESTALT_S3_SECURE", "0")
    data, run = _nih(24), RayRun("round-0001", "s3://gestalt-train/runs")
    first = train_task_model_ray(CONFIG, *data, TrainConfig(max_epochs=1, batch_size=12), run)
    names = [o.object_name for o in client.list_objects("gestalt-train", recursive=True)]
    assert any(name.startswith("runs/round-0001/checkpoint_") for name in names)
    assert any(name.endswith("/state.pt") for name in names)
    second = train_task_model_ray(CONFIG, *data, TrainConfig(max_epochs=2, batch_size=12), run)
    assert [r["epoch"] for r in second.history] == [1.0, 2.0]
    assert second.history[0] == first.history[0]  # epoch 1 came from the bucket, not rerun
    assert second.restarts == 1

    registry = ModelRegistry("s3://gestalt-train/runs")
    model_id = registry.publish("task", 1, CONFIG.to_dict(), second.model.state_dict())
    assert f"runs/models/{model_id}.pt" in {
        o.object_name for o in client.list_objects("gestalt-train", recursive=True)
    }
    assert registry.for_round("task", 1) == model_id
    model, config = model_from_state(*registry.fetch(model_id), source=model_id)
    images = torch.from_numpy(data[2][:4])
    np.testing.assert_array_equal(
        predict_probabilities(model, images, config),
        predict_probabilities(second.model, images, CONFIG),
    )


def test_a_resumed_run_draws_the_dropout_masks_of_an_uninterrupted_one(
    ray_cluster: RayCluster, tmp_path: Path
) -> None:
    config = ModelConfig("small_cnn", 14, image_size=28)  # dropout after every block
    data, settings = _nih(24), TrainConfig(max_epochs=2, patience=10, batch_size=12)
    whole = train_task_model_ray(config, *data, settings, RayRun("whole", str(tmp_path)))
    split = RayRun("split", str(tmp_path))
    train_task_model_ray(config, *data, TrainConfig(max_epochs=1, batch_size=12), split)
    resumed = train_task_model_ray(config, *data, settings, split)  # epoch 2 in a new worker
    assert resumed.restarts == 1
    measured = [
        [(r["train_loss"], r["val_macro_auc"]) for r in run.history] for run in (resumed, whole)
    ]
    assert measured[0] == measured[1]
    for name, tensor in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, rtol=0, atol=0)


def test_storage_locations_are_validated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path, filesystem = checkpoint_storage(str(tmp_path / "new" / "folder"))
    assert filesystem is None
    assert Path(path).is_dir()
    with pytest.raises(ValueError, match="s3://bucket/prefix"):  # the store's validation
        checkpoint_storage("s3://ok-bucket/../etc")
    for name in ("GESTALT_S3_ENDPOINT", "GESTALT_S3_ACCESS_KEY", "GESTALT_S3_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="needs the environment variable"):
        checkpoint_storage("s3://ok-bucket/runs")


def test_bad_training_data_fails_before_any_worker_starts(tmp_path: Path) -> None:
    images, labels, val_images, val_labels = _nih(8)
    run = RayRun("bad", str(tmp_path))
    with pytest.raises(ValueError, match="train_labels"):
        train_task_model_ray(CONFIG, images, labels[:4], val_images, val_labels, None, run)
    nan_images = torch.full((8, 28, 28), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        train_task_model_ray(CONFIG, nan_images, labels, val_images, val_labels, None, run)


def test_cli_trains_a_round_and_publishes_its_model(
    ray_cluster: RayCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = load_dataset(bundled_nih_path(), "train", "images")
    ids_file = tmp_path / "labeled.txt"
    ids_file.write_text("\n".join(str(i) for i in train.ids[:40]) + "\n")
    storage, report = tmp_path / "store", tmp_path / "round.json"
    common = ["train", "--images-key", "images", "--storage", str(storage), "--round", "3"]
    assert (
        main([*common, "--labeled-ids", str(ids_file), "--epochs", "2", "--out", str(report)]) == 0
    )
    written = json.loads(report.read_text())
    assert [record["epoch"] for record in written["history"]] == [1.0, 2.0]
    assert ModelRegistry(str(storage)).for_round("task", 3) == written["model_id"]
    assert f"round 3 model: {written['model_id']}" in capsys.readouterr().out

    ids_file.write_text(f"{train.ids[0]}\nno-such-scan\n")
    assert main([*common, "--labeled-ids", str(ids_file)]) == 2
    assert "1 id(s) not in" in capsys.readouterr().err
