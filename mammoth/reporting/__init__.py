"""Reporting: metrics, results.json and its plot, experiment loggers, the reproduction ledger, and
the reading and tabulating of run directories (sweep summaries)."""
