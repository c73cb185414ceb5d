"""A child for supervisor tests: exits with status 3 as soon as it starts."""

raise SystemExit(3)
