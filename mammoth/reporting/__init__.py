"""Reporting: metrics, results.json and its plot, experiment loggers, Hydra callbacks, sweep summaries."""
