"""The drowsiness policy: per-frame features in, events out; no I/O, no clocks, no threads."""
