"""The `sipmesh` operator command line (typer)."""
