"""The fleet sink: subscribes to the vehicles' MQTT messages, validates them (dead letters for
what fails), stores them idempotently in SQLite or PostgreSQL, serves the HTTP API, metrics and
dashboard, and prunes by retention. Imports the shared ``sleepsafe`` package, never the vehicle's."""
