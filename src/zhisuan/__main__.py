"""``python -m zhisuan``: the same as the ``zhisuan`` command."""

from __future__ import annotations

from zhisuan.cli.main import main

main()
