"""Run reports: one self-contained HTML page per config (maps, result tables, data summaries).

``landuse run report`` builds it with :func:`landuse.report.html.build_report` and logs it to
MLflow with :func:`landuse.report.html.log_report`.
"""
