"""zhisuan (智算): a private Model-as-a-Service on your own accelerators."""

from __future__ import annotations

__version__ = "0.1.0"
