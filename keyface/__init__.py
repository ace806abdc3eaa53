"""The ``keyface`` command line, fronting the engine, export tools and server."""

__version__ = "0.1.0"
