"""Errors a user can fix: raised where the problem is found, told by the CLI in one line."""

from __future__ import annotations


class PinpipeError(Exception):
    """Something the user can put right: the message says what was wrong and what to do."""


class LakeMissing(PinpipeError):
    """The lake holds no bronze tables (a mistyped path, or nothing loaded yet)."""


class NoWarehouse(PinpipeError):
    """The warehouse has not been built yet, or not at that path."""


class BuildBusy(PinpipeError):
    """Another build holds the warehouse for longer than this one would wait."""


class ServiceDown(PinpipeError):
    """A service a stage needs (Kafka, S3, Kinesis) does not answer."""


class NotReadOnly(PinpipeError):
    """A statement given to a reader (`pinpipe sql`, the UI's SQL page) that could change something."""


class EngineNotInstalled(PinpipeError):
    """The dbt target's adapter is not installed (Spark and Databricks are not in the default install)."""
