"""The commands of `llmgrade`, one module each; every module defines `command` (a click command).

grader/cli.py adds each module's `command` to the group, so a new command is a new module here.
"""
