"""Retraining jobs: the queue in the sink's database, the worker that runs them, the retraining
pipeline and its gate."""
