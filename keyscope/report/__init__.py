"""Rendering: every table, markdown and JSON document a command prints."""
