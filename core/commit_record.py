"""What a finished node's `DONE` marker holds: its final state and result, and what the
files it was written after looked like.

Why: `DONE` is written last and alone proves completion (`core.state`); it was a bare
timestamp. A reader with nothing cached (the first `status` or `analysis collect` of a
grid on an object store) then needed two GETs per finished node, `state.json` and
`result.json`. Written as this record it needs one: on the paper plan, 1,299 reads
instead of 2,598. The files stay what they were and remain the truth: the record is
used only when the listing shows `state.json` and `result.json` exactly as the record
describes them (size, and on S3 the ETag, which is the MD5 of a single PUT's bytes), so
a file torn, rewritten or removed after the commit is read again and judged as before.
A marker written by an older version (a timestamp) simply has no record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from xstilts.core.store import DONE, json_bytes

RECORD_VERSION = 1
MIN_RECORD_SIZE = 64
"""Bytes: a DONE smaller than this cannot be a record (the smallest is ~200 bytes)."""
STATE_FILE = "state.json"
RESULT_FILE = "result.json"


def describe(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "md5": hashlib.md5(data, usedforsecurity=False).hexdigest()}


def done_marker(at: float, state: dict[str, Any], result: dict[str, Any]) -> str:
    """The text of `DONE` for a node committed at `at` whose state.json and result.json
    were just written from `state` and `result` (with `Store.write_json`)."""
    record = {"version": RECORD_VERSION, "committed": at, "state": state, "result": result,
              "files": {STATE_FILE: describe(json_bytes(state)), RESULT_FILE: describe(json_bytes(result))}}
    return json.dumps(record, sort_keys=True, default=str) + "\n"


@dataclass
class CommitRecord:
    state: dict[str, Any]
    result: dict[str, Any]
    files: dict[str, dict[str, Any]]

    def matches(self, listed: dict[str, str]) -> bool:
        """Whether the listed fingerprints ('size:stamp', `core.listing.fingerprint`) of
        state.json and result.json are those of the bytes this record was written with:
        the same size, and the MD5 where the stamp is an S3 ETag (a single PUT's MD5),
        else a modification time no later than DONE's (a rewrite after the commit is newer)."""
        done_stamp = _number(listed.get(DONE, "").partition(":")[2])
        for name in (STATE_FILE, RESULT_FILE):
            expected, fingerprint = self.files.get(name), listed.get(name)
            if not isinstance(expected, dict) or fingerprint is None:
                return False
            size, _, stamp = fingerprint.partition(":")
            if size != str(expected.get("size")):
                return False
            etag = stamp.strip('"')
            if len(etag) == 32 and all(c in "0123456789abcdef" for c in etag):
                if etag != expected.get("md5"):
                    return False
                continue
            written = _number(stamp)
            if written is None or done_stamp is None or written > done_stamp:
                return False
        return True


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def may_hold_record(listed: dict[str, str]) -> bool:
    """Whether the listed DONE is big enough to be a record (an older marker is a
    timestamp of about 20 bytes): reading it is then worth a request."""
    size = listed.get(DONE, "").partition(":")[0]
    return size.isdigit() and int(size) >= MIN_RECORD_SIZE


def parse_marker(text: str | None) -> CommitRecord | None:
    """The record in a DONE marker's text, or None (an older timestamp marker, a foreign
    or damaged one): then the node's files are read instead."""
    if not text or not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if (isinstance(value, dict) and value.get("version") == RECORD_VERSION and isinstance(value.get("state"), dict)
            and isinstance(value.get("result"), dict) and isinstance(value.get("files"), dict)):
        return CommitRecord(value["state"], value["result"], value["files"])
    return None
