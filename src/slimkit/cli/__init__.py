"""The ``slimkit`` command line: one small module per command group."""
