"""Reading a W&B run's own `.wandb` file (its transaction log), as `wandb sync` does.

wandb >= 0.19 writes offline runs only there (no files/config.yaml until synced) and no
longer ships a Python reader. The file is LevelDB's log format (32 KiB blocks of
checksummed chunks) after a 7-byte `:W&B` header; each record is a protobuf
`wandb_internal_pb2.Record`, parsed with wandb's own schema.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
CHUNK_HEADER = 7  # crc32c (4), length (2), type (1)
FILE_HEADER = struct.Struct("<4sHB")  # ":W&B", magic 0xBEE1, version
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[Any]:
    """Every `Record` of a `.wandb` file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _version = FILE_HEADER.unpack_from(data, 0)
    assert ident == b":W&B" and magic == 0xBEE1, f"{path} is not a W&B run file"
    records, pending, offset = [], b"", FILE_HEADER.size
    while offset + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < CHUNK_HEADER:  # the block's tail is padding
            offset += left_in_block
            continue
        _crc, length, kind = struct.unpack_from("<IHB", data, offset)
        if length == 0 and kind == 0:
            break  # zeroed tail: the end of what was written
        chunk = data[offset + CHUNK_HEADER: offset + CHUNK_HEADER + length]
        offset += CHUNK_HEADER + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def run_of(records: list[Any]) -> Any:
    """The run record: id, name, project, group, tags and the config."""
    return next(r.run for r in records if r.WhichOneof("record_type") == "run")


def config_of(run: Any) -> dict[str, Any]:
    return {_key(item): json.loads(item.value_json) for item in run.config.update if _key(item) != "_wandb"}


def history_of(records: list[Any]) -> list[dict[str, Any]]:
    """The rows `run.log` wrote, in order, each {key: value} with `_step`."""
    return [{_key(item): json.loads(item.value_json) for item in r.history.item}
            for r in records if r.WhichOneof("record_type") == "history"]
