"""The benchmark: every strategy on real models, interleaved, reported as JSON + Markdown + PNG.

run_bench(ens, ...)   run it and return the report dict (runner.py)
write_all(report, out), markdown_table(report)   the files and the table (report.py)
CHAT_PROMPTS   the chat workload's requests (chat_prompts.py); HumanEval is the other workload
"""

from .chat_prompts import CHAT_PROMPTS
from .report import markdown_table, write_all
from .runner import (
    ROW_FIELDS,
    WORKLOADS,
    StrategySpec,
    build_settings,
    parse_settings,
    parse_strategies,
    run_bench,
    workload_prompts,
)

__all__ = [
    "CHAT_PROMPTS",
    "ROW_FIELDS",
    "WORKLOADS",
    "StrategySpec",
    "build_settings",
    "markdown_table",
    "parse_settings",
    "parse_strategies",
    "run_bench",
    "workload_prompts",
    "write_all",
]
