"""The runner's exceptions: each message names the fix."""


class RunnerError(Exception):
    """Base of every error the runner reports to the user (exit code 2, no traceback)."""


class ConfigError(RunnerError):
    """The composed configuration or the input it points at is wrong."""


class SubmissionError(RunnerError):
    """A scheduler refused the job, or its answer could not be understood."""


class JobFailedError(RunnerError):
    """The job ran but one or more ranks or hosts failed."""
