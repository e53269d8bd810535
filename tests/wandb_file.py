"""What an offline W&B run handed to W&B, read back from its .wandb file without the network.

The record decoder is ../shared/tools/read_wandb.py's (LevelDB-style log of protobuf Records); this one also keeps
the config values and the summary, which that tool does not print.
"""

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb


def records(path: Path):
    data = Path(path).read_bytes()
    pos, block, buf = 7, 32768, b""  # 7-byte file header ":W&B" + magic + version
    while pos < len(data):
        left = block - (pos % block)
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if length == 0 and kind == 0:
            pos += block - (pos % block) if pos % block else 0
            continue
        buf += data[pos:pos + length]
        pos += length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def read_run(path: Path) -> dict:
    """{group, name, config: {key: value}, summary: {key: value} (last update wins), metrics: {name: summary}}."""
    out = {"group": None, "name": None, "config": {}, "summary": {}, "metrics": {}}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["group"], out["name"] = r.run.run_group, r.run.display_name
            out["config"].update({_key(i): json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            out["config"].update({_key(i): json.loads(i.value_json) for i in r.config.update})
        elif kind == "summary":
            out["summary"].update({_key(i): json.loads(i.value_json) for i in r.summary.update})
        elif kind == "metric":
            s = r.metric.summary
            out["metrics"][r.metric.name] = {k for k in ("min", "max", "mean", "last", "best") if getattr(s, k)}
    return out


def wandb_file(run_dir: Path) -> Path:
    (log,) = Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")
    return log
