"""Export the turnwise metrics to Amazon CloudWatch (off unless enabled).

A :class:`CloudWatchExporter` takes metric values keyed by their Prometheus names
(``put``) or whole ``metrics.jsonl`` / ``evaluations.jsonl`` rows (``publish``),
buffers them as CloudWatch datums and sends them with ``PutMetricData`` in batches
within the API's limits. CloudWatch names are the Prometheus names without the
``turnwise_`` prefix (counters also without ``_total``: they are sent as increments,
read them with the Sum statistic); the labels become dimensions.

Disabled (the default), the exporter makes no AWS call and creates no boto3 client:
a run needs no AWS credentials unless CloudWatch is asked for. Credentials come from
boto3's standard chain and are never logged; ``AWS_ENDPOINT_URL`` is honoured.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from monitoring.catalog import BY_NAME, RUN_LABELS, row_samples
from turnwise.config import CloudWatchConfig

log = logging.getLogger(__name__)

# PutMetricData limits (API reference, PutMetricData): at most 1,000 metric datums and
# 1 MB of HTTP POST payload per request; 30 dimensions per metric, dimension names
# up to 255 and values up to 1,024 characters; 150 distinct values per datum.
MAX_DATUMS_PER_CALL = 1000
MAX_PAYLOAD_BYTES = 1_000_000
PAYLOAD_MARGIN_BYTES = 16_384  # action, version, namespace and envelope
MAX_DIMENSIONS = 30
MAX_VALUES_PER_DATUM = 150
DIVERGENCE_METRIC = "eval_train_return_ratio"


class CloudWatchExporter:
    """``put(values)``, ``publish(row)``, ``flush()``, ``ensure_divergence_alarm()``."""

    def __init__(self, config: CloudWatchConfig, run: str, experiment: str) -> None:
        self.config = config
        self.dimensions = {"run": run, "experiment": experiment, **config.dimensions}
        _check_dimensions(self.dimensions)
        self.client: Any = None
        self.calls = 0  # PutMetricData requests sent
        self.failures = 0  # PutMetricData requests that failed (their datums are dropped)
        self._buffer: list[dict[str, Any]] = []
        self._totals: dict[str, float] = {}
        self._last_flush = time.monotonic()
        if config.enabled:
            self.client = _client(config)
            log.info(
                "CloudWatch export to namespace %s (region %s)",
                config.namespace,
                self.client.meta.region_name,
            )

    # -- values in ------------------------------------------------------------------
    def put(
        self,
        values: Mapping[str, float | Sequence[float]],
        labels: Mapping[str, str] | None = None,
        timestamp: datetime | None = None,
    ) -> None:
        """Buffer values keyed by Prometheus name; a histogram takes a list of
        observations. Counters take increments. Sends when the flush interval is up."""
        if self.client is None:
            return
        stamp = timestamp or datetime.now(UTC)
        dimensions = {**self.dimensions, **(labels or {})}
        for name, value in values.items():
            self._buffer += _datums(name, value, dimensions, stamp, self.config.storage_resolution)
        if time.monotonic() - self._last_flush >= self.config.flush_interval_s:
            self.flush()

    def publish(self, row: Mapping[str, Any], timestamp: datetime | None = None) -> None:
        """Buffer the catalog values of a metrics.jsonl or evaluations.jsonl row; the
        run totals of a training row go out as increments since the previous row."""
        if self.client is None:
            return
        for name, labels, value in row_samples(row):
            if BY_NAME[name].kind == "counter" and name != "turnwise_divergence_alerts_total":
                value, self._totals[name] = value - self._totals.get(name, 0.0), value
            self.put({name: value}, labels, timestamp)

    # -- out --------------------------------------------------------------------------
    def flush(self) -> int:
        """Send everything buffered; returns how many PutMetricData requests succeeded."""
        self._last_flush = time.monotonic()
        if self.client is None or not self._buffer:
            return 0
        from botocore.exceptions import BotoCoreError, ClientError

        datums, self._buffer = self._buffer, []
        sent = 0
        for batch in batches(datums):
            try:
                self.client.put_metric_data(Namespace=self.config.namespace, MetricData=batch)
                sent += 1
            except (BotoCoreError, ClientError) as error:
                self.failures += 1
                log.warning(
                    "CloudWatch PutMetricData of %d datums failed: %s: %s",
                    len(batch),
                    type(error).__name__,
                    error,
                )
        self.calls += sent
        return sent

    def close(self) -> None:
        self.flush()

    def ensure_divergence_alarm(self) -> str | None:
        """Create or update this run's eval/train divergence alarm; its name, or None
        when disabled. ``put_metric_alarm`` is idempotent."""
        if self.client is None:
            return None
        cfg = self.config
        name = f"{cfg.namespace}-{self.dimensions['run']}-eval-train-divergence"[:255]
        self.client.put_metric_alarm(
            AlarmName=name,
            AlarmDescription=(
                f"Evaluation return below {cfg.alarm_threshold:.0%} of training return "
                f"(run {self.dimensions['run']}, {self.dimensions['experiment']})"
            ),
            Namespace=cfg.namespace,
            MetricName=DIVERGENCE_METRIC,
            Dimensions=_dimension_list(self.dimensions),
            Statistic="Minimum",
            Period=cfg.alarm_period_s,
            EvaluationPeriods=cfg.alarm_evaluation_periods,
            Threshold=cfg.alarm_threshold,
            ComparisonOperator="LessThanThreshold",
            TreatMissingData="ignore",  # evaluations are sparse: keep the last state
            ActionsEnabled=bool(cfg.alarm_actions),
            AlarmActions=list(cfg.alarm_actions),
        )
        log.info("CloudWatch alarm %s: %s < %g", name, DIVERGENCE_METRIC, cfg.alarm_threshold)
        return name


def batches(
    datums: Iterable[dict[str, Any]],
    max_datums: int = MAX_DATUMS_PER_CALL,
    max_bytes: int = MAX_PAYLOAD_BYTES - PAYLOAD_MARGIN_BYTES,
) -> Iterator[list[dict[str, Any]]]:
    """Split datums into requests under both limits (sizes estimated conservatively,
    as the form-encoded query protocol, the most verbose one botocore may use)."""
    batch: list[dict[str, Any]] = []
    size = 0
    for datum in datums:
        datum_size = encoded_size(datum)
        if batch and (len(batch) >= max_datums or size + datum_size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(datum)
        size += datum_size
    if batch:
        yield batch


def encoded_size(datum: Mapping[str, Any]) -> int:
    """Bytes of one datum in a form-encoded PutMetricData request (index 1000)."""
    return len(urlencode(list(_flatten("MetricData.member.1000", datum)))) + 1


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _flatten(f"{prefix}.{key}", item)
    elif isinstance(value, list):
        for i, item in enumerate(value, 1):
            yield from _flatten(f"{prefix}.member.{i}", item)
    elif isinstance(value, datetime):
        yield prefix, value.isoformat()
    else:
        yield prefix, str(value)


def cloudwatch_name(name: str) -> str:
    return BY_NAME[name].cloudwatch_name


def _datums(
    name: str,
    value: float | Sequence[float],
    dimensions: Mapping[str, str],
    stamp: datetime,
    resolution: int,
) -> list[dict[str, Any]]:
    metric = BY_NAME.get(name)
    if metric is None:
        raise KeyError(f"{name!r} is not a turnwise metric (see monitoring/catalog.py)")
    base = {
        "MetricName": metric.cloudwatch_name,
        "Dimensions": _dimension_list(dimensions),
        "Timestamp": stamp,
        "Unit": metric.unit,
        "StorageResolution": resolution,
    }
    if isinstance(value, int | float):
        return [{**base, "Value": float(value)}] if math.isfinite(value) else []
    counts = sorted(Counter(float(v) for v in value if math.isfinite(v)).items())
    return [
        {**base, "Values": [v for v, _ in chunk], "Counts": [float(n) for _, n in chunk]}
        for chunk in (
            counts[i : i + MAX_VALUES_PER_DATUM]
            for i in range(0, len(counts), MAX_VALUES_PER_DATUM)
        )
    ]


def _dimension_list(dimensions: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Name": k, "Value": str(v)} for k, v in dimensions.items()]


def _check_dimensions(dimensions: Mapping[str, str]) -> None:
    if len(dimensions) > MAX_DIMENSIONS - 1:  # one left for a metric's own label (kind)
        raise ValueError(
            f"CloudWatch allows {MAX_DIMENSIONS} dimensions per metric; "
            f"{list(RUN_LABELS)} and {len(dimensions) - 2} configured are too many"
        )
    for key, value in dimensions.items():
        if not key or len(key) > 255 or not str(value) or len(str(value)) > 1024:
            raise ValueError(
                f"CloudWatch dimension {key!r}: names need 1-255 characters, values 1-1024"
            )


def _client(config: CloudWatchConfig) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    return session.client(
        "cloudwatch",
        region_name=config.region,
        config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 3}),
    )
