"""The benchmark: every strategy on real models, interleaved, reported as JSON + Markdown + PNG.

run_bench(ens, ...)   run it and return the report dict (runner.py)
write_all(report, out), markdown_table(report)   the files and the table (report.py)
"""

from .report import markdown_table, write_all
from .runner import ROW_FIELDS, StrategySpec, build_settings, parse_settings, parse_strategies, run_bench

__all__ = [
    "ROW_FIELDS",
    "StrategySpec",
    "build_settings",
    "markdown_table",
    "parse_settings",
    "parse_strategies",
    "run_bench",
    "write_all",
]
