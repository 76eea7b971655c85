"""Presentation: the command line, the progress bar, the summary and the log file."""
