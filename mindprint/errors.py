"""User mistakes as one line: which key, which value, what is allowed. No tracebacks."""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

from hydra.errors import HydraException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from mindprint.config import ConfigError, VoiceRunConfig
from mindprint.records import RecordError


def _allowed_keys(full_key: str) -> Optional[list[str]]:
    """The keys of the dataclass that holds `full_key`, e.g. lora.rnk → LoraConfig's fields."""
    node: type = VoiceRunConfig  # the widest schema: a run's keys and the voice pipeline's
    for part in full_key.split(".")[:-1]:
        fields = {f.name: f for f in dataclasses.fields(node)}
        if part not in fields or not dataclasses.is_dataclass(fields[part].default_factory):
            return None
        node = fields[part].default_factory
    return [f.name for f in dataclasses.fields(node)]


def _omegaconf_line(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None) or ""
    msg = str(getattr(err, "msg", "") or err).strip().splitlines()[0]
    if isinstance(err, (ConfigKeyError, ConfigAttributeError)) and key:
        allowed = _allowed_keys(key)
        hint = f" (allowed keys: {', '.join(allowed)})" if allowed else ""
        return f"{key} is not a known key{hint}"
    if isinstance(err.__cause__, ConfigError):
        return str(err.__cause__)
    return f"{key}: {msg}" if key else msg


class TrainingStopped(RuntimeError):
    """The run cannot go on (repeated NaN/Inf); the message says why and where the last good checkpoint is."""


_NOT_FOUND = re.compile(r"Could not find '([^']+)/([^'/]+)'")  # group (maybe nested, hydra/launcher) / option


def one_line(err: BaseException) -> Optional[str]:
    """The one-line message for a user mistake, or None when `err` is a bug that deserves its traceback."""
    if isinstance(err, (ConfigError, TrainingStopped, RecordError)):
        return str(err)
    if isinstance(err, OmegaConfBaseException):
        return _omegaconf_line(err)
    if isinstance(err, HydraException):
        if isinstance(err.__cause__, (OmegaConfBaseException, ConfigError)):
            return one_line(err.__cause__)
        text = str(err)
        found = _NOT_FOUND.search(text)
        if found:
            group, option = found.groups()
            listing = text.split("Available options in")[-1].split("Config search path")[0]
            options = [ln.strip() for ln in listing.splitlines()[1:] if ln.strip()] if "Available" in text else []
            allowed = f"one of {', '.join(options)}" if options else f"a config under {group}/"
            return f"{group}={option} is not allowed: expected {allowed}"
        return " ".join(ln.strip() for ln in text.strip().splitlines() if ln.strip())
    return None
