"""HTTP routers: thin, each hands the work to a serving module."""
