"""Errors that stealkit raises on purpose. Each message names the problem and the fix."""

from __future__ import annotations


class StealkitError(Exception):
    """Base class for every error stealkit raises deliberately."""


class BudgetExceeded(StealkitError):
    """A query batch would cross the ledger's budget; it was refused whole and nothing was charged."""


class DataNotFound(StealkitError):
    """A data set's files are not on this machine."""


class ConfigError(StealkitError):
    """A configuration file or value is invalid."""


class QueryError(StealkitError):
    """A query's inputs do not match what the oracle accepts."""


class QueryRefused(StealkitError):
    """A defence refused to answer a batch (a monitor blocked the client, say); nothing was
    charged for it, as with any refusal."""


class VictimError(StealkitError):
    """The victim gave an answer that cannot be right (NaN or infinite values); nothing was
    charged for it."""
