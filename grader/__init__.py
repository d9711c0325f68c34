"""llmgrade: grade a course's GPT stages with hidden tests, safely."""

__version__ = "0.1.0"
