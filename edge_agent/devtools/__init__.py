"""Developers' tools behind `sleepsafe-edge`: fetching the pinned labelled clips and scoring the
agent on them (`eval`). Not on the vehicle's frame path."""
