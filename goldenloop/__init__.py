"""goldenloop: close the log-to-eval loop for LLM features in production."""

__version__ = "0.1.0"
