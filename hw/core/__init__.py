"""The accelerator core: buffers, command queue and units that execute whole layers on chip.

`hw.core.isa` is the command set (shared with the driver), `hw.core.core.Core` the component;
the host-side tensor layouts and command planning are the compiler's (`sw.compiler`).
"""

from .core import (CORE_DATAFLOW, Core, CoreGeometry, check_core_dataflow, core_from_config,
                   geometry_from_config)
from .isa import COMMAND_WORDS, ErrorCode, Opcode, decode, encode

__all__ = ["Core", "CoreGeometry", "CORE_DATAFLOW", "check_core_dataflow", "core_from_config",
           "geometry_from_config", "Opcode", "ErrorCode", "COMMAND_WORDS", "encode", "decode"]
