"""What the importers share: their exception and the errors every format reports alike."""

__all__ = ["ModelImportError", "unsupported_op"]


class ModelImportError(ValueError):
    """A model file the importers cannot turn into a graph: unreadable (truncated, corrupted,
    not the format its name says), not quantized, or using an op, a data type or an option the
    graph cannot express. The message names what was found and what is accepted."""


def unsupported_op(format_name, op, node, position, supported):
    """The error for an op with neither a lowering nor a host kernel."""
    return ModelImportError(
        f"{format_name} op {op} (node {node!r}, position {position} in execution order) is not "
        f"supported; supported ops: {', '.join(sorted(supported))}")
