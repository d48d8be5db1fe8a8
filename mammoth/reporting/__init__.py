"""Reporting: metrics, results.json and its plot, experiment loggers, sweep summaries.

- ``metrics``, ``optimized_metric``, ``results`` (results.json and its plot), ``loggers``, ``ledger``
- sweep summaries: ``run_records`` (find and read run directories, bounded), ``sweep_tables``
  (group into configurations; escaped Markdown and CSV), ``sweep_plan`` (what a sweep planned:
  job count, Optuna study), ``figures`` (summary.png), ``summary_files`` (write the three files
  under the directory's lock); the command line is :mod:`mammoth.app.summary_command`.
"""
