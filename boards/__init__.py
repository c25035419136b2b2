"""Board and device table: amaranth-boards platform, clock and pins, resource budget, and the
accelerator preset that fills each device (`boards.catalog`, `boards.devices`, `boards.budget`)."""

from .budget import BudgetError, ResourceEstimate, check_budget, ebr_blocks, estimate_resources
from .catalog import BOARDS, Board, SerdesLink, UartLink, Variant, board, variant
from .devices import DEVICES, Device, device

__all__ = ["BOARDS", "Board", "SerdesLink", "UartLink", "Variant", "board", "variant",
           "DEVICES", "Device", "device",
           "BudgetError", "ResourceEstimate", "check_budget", "ebr_blocks", "estimate_resources"]
