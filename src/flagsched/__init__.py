"""flagsched: scheduled feature-flag changes applied on time, exactly once."""

__version__ = "0.1.0"
