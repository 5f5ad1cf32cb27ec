"""Reading TensorBoard event files without TensorFlow or the tensorboard package.

An event file is a sequence of TFRecords (uint64 length, uint32 masked CRC, payload, uint32 CRC);
each payload is an ``Event`` protobuf, whose scalar summaries we decode with tensorboardX's
generated protobuf classes. Used by tests and reports to check what a dashboard will show.
"""

from __future__ import annotations

import struct
from pathlib import Path


def read_scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] over every event file under ``logdir``, in file then write order."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for f in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        data = f.read_bytes()
        i = 0
        while i + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[i: i + 8])
            payload = data[i + 12: i + 12 + n]
            i += 12 + n + 4
            if len(payload) < n:
                break  # a torn last record
            ev = Event()
            ev.ParseFromString(payload)
            for v in ev.summary.value:
                if v.HasField("simple_value"):
                    out.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return out
