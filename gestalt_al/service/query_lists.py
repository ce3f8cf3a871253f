"""A round's query list in the formats labeling tools import.

Pool images live inside ``.npz`` shards, which no labeling tool opens, so each queried image
is also written as a PNG next to the list. ``query.json`` and ``query.csv`` name, per sample:
id, rank, score, round, strategy, the PNG's URI and where the image sits in the pool (shard
URI and position); ``label_studio.json`` is a Label Studio task list.
"""

from __future__ import annotations

import csv
import io
import json
import urllib.parse
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath

import numpy as np
from PIL import Image

from gestalt_al.storage import ObjectStore, join_key

COLUMNS = ("sample_id", "rank", "score", "round", "strategy", "uri", "shard_uri", "shard_index")
LOCAL_FILES_URL = "/data/local-files/?d="  # Label Studio's local-files serving


@dataclass(frozen=True)
class QueryRow:
    sample_id: str
    rank: int
    score: float
    round: int | None  # None for the loop's initial random set
    strategy: str
    uri: str  # the exported PNG
    shard_uri: str
    shard_index: int  # position of the image inside its shard


def png_bytes(image: np.ndarray) -> bytes:
    """A stored pool image (``[H, W]`` or ``[C, H, W]``, uint8 or float in [0, 1]) as PNG:
    grey, or RGB for three channels, else the first channel."""
    array = np.asarray(image)
    if array.ndim == 3:
        array = np.moveaxis(array, 0, -1) if array.shape[0] == 3 else array[0]
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def query_csv(rows: Sequence[QueryRow]) -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in asdict(row).items()})
    return text.getvalue().encode()


def query_json(rows: Sequence[QueryRow], header: dict[str, object]) -> bytes:
    return json.dumps({**header, "samples": [asdict(row) for row in rows]}, indent=1).encode()


def read_query_json(data: bytes) -> list[QueryRow]:
    """The rows of a ``query.json``, e.g. to write Label Studio tasks for another root."""
    return [QueryRow(**sample) for sample in json.loads(data)["samples"]]


def label_studio_tasks(rows: Sequence[QueryRow], local_files_root: str | None = None) -> bytes:
    """Label Studio tasks (``[{"data": {"image": ..., "sample_id": ...}}]``). URIs stay as
    they are (``s3://`` ones resolve through a connected S3 source storage); with
    ``local_files_root`` (Label Studio's ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``) local
    paths under it become local-files URLs."""
    tasks = [
        {
            "data": {
                "image": _served(row.uri, local_files_root),
                "sample_id": row.sample_id,
                "rank": row.rank,
                "score": row.score,
                "round": row.round,
            }
        }
        for row in rows
    ]
    return json.dumps(tasks, indent=1).encode()


def _served(uri: str, root: str | None) -> str:
    if root is None or uri.startswith("s3://"):
        return uri
    relative = PurePosixPath(uri).relative_to(PurePosixPath(root))  # ValueError outside root
    return LOCAL_FILES_URL + urllib.parse.quote(str(relative))


def write_query_list(
    store: ObjectStore,
    prefix: str,
    rows: Sequence[QueryRow],
    images: np.ndarray,
    header: dict[str, object],
) -> None:
    """The PNGs first, then the lists that point at them (each object written whole)."""
    for row, image in zip(rows, images, strict=True):
        store.put(image_key(prefix, row.rank), png_bytes(image))
    store.put(join_key(prefix, "query.csv"), query_csv(rows))
    store.put(join_key(prefix, "label_studio.json"), label_studio_tasks(rows))
    store.put(join_key(prefix, "query.json"), query_json(rows, header))


def image_key(prefix: str, rank: int) -> str:
    """PNGs are named by rank (sample ids need not be valid file names), so a folder listing
    is the query order; the lists map each file back to its sample id."""
    return join_key(prefix, "images", f"{rank:05d}.png")
