"""Executing: carry out a stream of actions with a pool of workers; knows nothing of terminals."""
