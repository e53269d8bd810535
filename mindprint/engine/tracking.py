"""Where metrics go: metrics.jsonl in the run directory (the local record, always), and W&B if configured."""

from __future__ import annotations

import json
import math
import os
import socket
import sys
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

from mindprint.analysis.stats import headline, objective_value
from mindprint.config import ConfigError, LoggerConfig
from mindprint.records import METRICS, SAMPLES, flatten, jsonable, read_metrics

# What W&B aggregates itself into each run's summary (define_metric): the compare report's best reward (max of
# objective/scores) and held-out reward (the last eval/scores). The report's other final values are not W&B
# aggregations (last-fifth means); `finish` writes them, all under `report/`.
SUMMARIES = {"objective/scores": "max,last", "objective/kl": "last", "eval/scores": "last,max", "eval/kl": "last"}


def wandb_reachable() -> Optional[str]:
    """None if W&B's server (WANDB_BASE_URL, else api.wandb.ai) takes a connection within 3 s; else why not."""
    url = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    host, port = url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=3).close()
        return None
    except OSError as err:
        return f"{host}:{port}: {err.strerror or err}"


def wandb_mode(mode: Optional[str], run_dir: Path) -> tuple[Optional[str], Optional[str]]:
    """(the mode to give wandb.init, a warning line or None).

    With no mode chosen (logger.mode and WANDB_MODE unset, wandb's default: online) on a machine that cannot reach
    W&B, such as a cluster node without network, the run logs offline rather than being lost to a traceback after
    wandb's timeout: one warning line says how to upload it later. logger.mode=online, chosen on purpose, is
    refused there in one line instead.
    """
    if mode in ("offline", "disabled") or (mode is None and os.environ.get("WANDB_MODE")):
        return mode, None
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return mode, None  # W&B is reached through a proxy, which a direct probe cannot tell: wandb decides
    why = wandb_reachable()
    if why is None:
        return mode, None
    if mode == "online":
        raise ConfigError(f"logger.mode='online' is not allowed here: W&B is out of reach ({why}); use "
                          "logger.mode=offline and upload later with wandb sync")
    return "offline", (f"warning: W&B is out of reach ({why}): logging offline under {run_dir / 'wandb'}; upload "
                       f"later with: wandb sync {run_dir / 'wandb'}/offline-run-*")


class Tracker:
    """metrics.jsonl + samples.jsonl in the run directory, mirrored to W&B when `logger.backend=wandb`.

    Only the main process constructs one; `finish()` must run however the run ends (W&B marks the
    run failed when given a non-zero exit code).
    """

    def __init__(self, run_dir: Path, cfg: LoggerConfig, config: dict, group: str, name: str,
                 resume_id: Optional[str] = None):
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        # opened at the first iteration's line: a run refused before it (a bad reward rule, say) leaves only what
        # Hydra wrote, and the one-line error removes that
        self._metrics = None
        self.objective = config.get("objective") or {}
        self.wandb = None
        if cfg.backend == "wandb":
            import wandb

            mode, warning = wandb_mode(cfg.mode, run_dir)
            if warning:
                print(warning, file=sys.stderr)
            self.wandb = wandb.init(
                project=cfg.project,
                entity=cfg.entity,
                group=cfg.group or group,
                name=cfg.name or name,
                tags=list(cfg.tags),
                job_type=cfg.job_type,
                mode=mode,
                config=flatten(config),
                dir=str(run_dir),
                id=resume_id,  # a resumed run continues its W&B run
                resume="allow" if resume_id else None,
            )
            for key, summary in SUMMARIES.items():
                self.wandb.define_metric(key, summary=summary)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self._metrics is None:
            self._metrics = open(self.run_dir / METRICS, "a", encoding="utf-8")
        self._metrics.write(json.dumps({k: jsonable(v) for k, v in metrics.items()}) + "\n")
        self._metrics.flush()  # a crash loses nothing already logged
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def log_samples(self, samples: list[dict[str, Any]], step: int) -> None:
        if not samples:
            return
        with open(self.run_dir / SAMPLES, "a", encoding="utf-8") as fh:
            for s in samples:
                fh.write(json.dumps({"iteration": step, **s}) + "\n")
        if self.wandb is not None:
            import wandb

            columns = ["prompt", "response", "score"]
            table = wandb.Table(columns=columns, data=[[s[c] for c in columns] for s in samples])
            self.wandb.log({"samples": table}, step=step)

    def report_summary(self) -> dict[str, float]:
        """The compare report's values for this run (mindprint.analysis.stats.headline over the whole of metrics.jsonl,
        a resumed run's earlier iterations included) and its objective, as `report/...` keys."""
        history = read_metrics(self.run_dir / METRICS)
        out = {f"report/{k}": v for k, v in headline(history).items() if v is not None}
        if self.objective.get("name"):
            value = objective_value(self.objective["name"], self.objective.get("kl_weight", 0.0), history)
            if math.isfinite(value):
                out["report/objective"] = value
        return out

    def finish(self, exit_code: int = 0) -> None:
        if self._metrics is not None:
            self._metrics.close()
        if self.wandb is not None:
            if exit_code == 0:
                self.wandb.summary.update(self.report_summary())
            self.wandb.finish(exit_code=exit_code)
            self.wandb = None

    @property
    def wandb_id(self) -> Optional[str]:
        return self.wandb.id if self.wandb is not None else None
