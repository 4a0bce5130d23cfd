"""Errors a user can cause, each with the exit code scripts rely on.

The CLI turns these into one line on stderr and the code below; anything else
is a bug and keeps its traceback.  Codes are documented in docs/exit-codes.md.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2  # click uses 2 for bad options too
EXIT_INPUT = 3  # a file or key that cannot be read as asked
EXIT_KAFKA = 4  # broker unreachable, unknown topic/group, protocol failure
EXIT_SKEW = 5  # --fail-on-skew threshold exceeded
EXIT_PARTIAL = 6  # work stopped early (Ctrl-C, broker died); what was read is kept
EXIT_UNFAIR = 7  # the sample is not proportional across partitions and cannot be re-weighted
EXIT_INTERRUPTED = 130


class KeyscopeError(Exception):
    """A problem the user can fix; ``str()`` says what and what to do."""

    exit_code = EXIT_INTERNAL


class UsageError(KeyscopeError, ValueError):
    exit_code = EXIT_USAGE


class InputError(KeyscopeError):
    exit_code = EXIT_INPUT


class KafkaError(KeyscopeError):
    exit_code = EXIT_KAFKA


class UnfairSample(KeyscopeError):
    """A skew or cause verdict from this sample would be wrong: its partitions were not read in
    proportion, and what would re-weight them (watermarks, rates) is missing."""

    exit_code = EXIT_UNFAIR
