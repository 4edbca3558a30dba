"""Helpers shared by every layer of the package: argument checks and backend selection."""
