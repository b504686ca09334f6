"""Developer tools, not on the vehicle's path: the generators of the configuration reference and
of docs/mqtt.md, which read both ends' models (a test keeps the generated files current)."""
