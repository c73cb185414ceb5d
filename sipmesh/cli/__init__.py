"""The ``sipmesh`` operator command line (typer): one module per group of commands."""
