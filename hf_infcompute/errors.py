"""Errors raised for bad input. Each message names the fix."""


class InputError(ValueError):
    """A user-supplied setting, file or dataset cannot be used as given."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss and was stopped."""
