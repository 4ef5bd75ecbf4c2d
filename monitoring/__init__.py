"""Monitoring of turnwise runs: the metric catalog, Prometheus alert rules, a Grafana
dashboard and a CloudWatch exporter (see docs/monitoring.md)."""
