"""SleepSafe Edge agent: on-vehicle driver drowsiness detection with local alerts."""

__version__ = "0.1.0"
