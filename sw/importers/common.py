"""What the importers share: their exception and the errors every format reports alike."""

import struct

__all__ = ["ModelImportError", "unsupported_op", "inconsistent_model"]


class ModelImportError(ValueError):
    """A model file the importers cannot turn into a graph: unreadable (truncated, corrupted,
    not the format its name says), not quantized, or using an op, a data type or an option the
    graph cannot express. The message names what was found and what is accepted."""


def unsupported_op(format_name, op, node, position, supported):
    """The error for an op with neither a lowering nor a host kernel."""
    return ModelImportError(
        f"{format_name} op {op} (node {node!r}, position {position} in execution order) is not "
        f"supported; supported ops: {', '.join(sorted(supported))}")


# What a file that parses but contradicts itself (a flipped bit in a shape or an index) makes
# the lowering raise before a check of ours catches it; struct.error comes from flatbuffers
# tables (TFLite op options) that are read lazily, during the lowering.
_INCONSISTENCIES = (ValueError, TypeError, IndexError, KeyError, AttributeError, ArithmeticError,
                    struct.error)


def inconsistent_model(format_name, convert, data):
    """`convert(data)`, any failure other than a `ModelImportError` reported as an
    inconsistent (likely corrupted) model instead of a traceback from inside the importer."""
    try:
        return convert(data)
    except ModelImportError:
        raise
    except _INCONSISTENCIES as error:
        raise ModelImportError(f"the {format_name} model is inconsistent (a corrupted file?): "
                               f"{type(error).__name__}: {error}") from None
