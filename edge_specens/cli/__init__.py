"""The `edge-specens` command line (click): generate, chat, models, bench, serve.

`main(argv)` runs it and maps every error to an exit status and one line on stderr;
`entry()` is the console script.
"""

from .main import cli, entry, main

__all__ = ["cli", "entry", "main"]
