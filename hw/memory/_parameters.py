"""Parameter checks shared by the memory components (messages name the parameter and value)."""

__all__ = ["check_int", "check_power_of_two", "check_choice"]


def check_int(owner, name, value, low, high=None):
    """`value` must be an int (not a bool) in `low`..`high` (inclusive; `high` None = unbounded)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{owner} {name} must be an integer, not {value!r}")
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{owner} {name} must be {allowed}, not {value}")
    return value


def check_power_of_two(owner, name, value, low, high=None):
    """`value` must be a power of two in `low`..`high`."""
    check_int(owner, name, value, low, high)
    if value & (value - 1):
        allowed = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{owner} {name} must be a power of two {allowed}, not {value}")
    return value


def check_choice(owner, name, value, choices):
    if value not in choices:
        raise ValueError(f"{owner} {name} must be one of {choices}, not {value!r}")
    return value
