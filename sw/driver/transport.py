"""Transports: how bytes or 32-bit words reach a device. Selected by URL in `sw.driver.link`.

Two kinds, because the two physical links differ:

* `ByteTransport` -- a byte pipe carrying the frame protocol of `hw.soc.protocol` (UART, the
  simulated SoC). `sw.driver.link.FrameLink` runs the protocol over it.
* `MappedTransport` -- a memory-mapped window with 32-bit accesses at the protocol's bus
  addresses (a PCIe BAR; in simulation `sw.driver.sim.SimBusTransport`, the SoC's word bus).
  `sw.driver.link.MappedLink` uses it directly.

Times are seconds of the transport's own clock: wall-clock for real links, simulated time for a
simulation, so that a simulated device behaves as it would on the line.
"""

import urllib.parse

from sw.driver.errors import InvalidURL, LinkClosed

__all__ = ["Closable", "ByteTransport", "MappedTransport", "split_url", "parse_options",
           "positive_int", "non_negative_int", "positive_float"]


class Closable:
    """Closed by `close()` (a second call does nothing), and a context manager that closes on
    exit. Subclasses free what they hold in `_release()` and call `_check_open(action)` before
    using it, so every use after `close()` raises `LinkClosed` naming what was attempted."""

    closed = False

    def close(self):
        if not self.closed:
            self.closed = True
            self._release()

    def _release(self):
        pass

    def _check_open(self, action):
        if self.closed:
            raise LinkClosed(f"Cannot {action}: the link was closed")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class ByteTransport(Closable):
    """A byte pipe to a device."""

    def write(self, data):
        """Send `data` (all of it)."""
        raise NotImplementedError

    def read(self, count, timeout):
        """Up to `count` received bytes, waiting at most `timeout` seconds; fewer on timeout."""
        raise NotImplementedError

    def discard_input(self):
        """Drop bytes received and not read yet (stale replies before a retry)."""
        raise NotImplementedError

    def reply_timeout(self, byte_count):
        """How long to wait for `byte_count` bytes of a reply before calling it lost."""
        raise NotImplementedError

    def now(self):
        """Seconds on this transport's clock (any origin)."""
        raise NotImplementedError


class MappedTransport(Closable):
    """A memory-mapped window of `size` bytes with 32-bit accesses."""

    size = 0

    def read32(self, address):
        raise NotImplementedError

    def write32(self, address, value):
        raise NotImplementedError

    def now(self):
        """Seconds on this transport's clock (any origin)."""
        raise NotImplementedError


def split_url(url):
    """(scheme, target, query) of ``scheme://target?query``; `InvalidURL` if it is not one."""
    if not isinstance(url, str) or "://" not in url:
        raise InvalidURL(f"Device URL must look like 'scheme://target?options' (sim://, uart://, "
                         f"pcie://), not {url!r}")
    scheme, rest = url.split("://", 1)
    target, _, query = rest.partition("?")
    return scheme, target, query


def parse_options(url, query, spec, *, passthrough=False):
    """Options of a URL query, converted by `spec` (name -> (convert, default)).

    Returns (options, unknown) where unknown is the list of (key, value) pairs not in `spec`;
    those are an `InvalidURL` error unless `passthrough`. A value `convert` rejects (ValueError,
    TypeError) is an `InvalidURL` naming the option, the value and what `convert` said."""
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidURL(f"Cannot parse the options {query!r} of {url!r}: expected "
                         f"'key=value&key=value'") from None
    options = {name: default for name, (_, default) in spec.items()}
    unknown = []
    for key, value in pairs:
        if key not in spec:
            unknown.append((key, value))
            continue
        convert, _ = spec[key]
        try:
            options[key] = convert(value)
        except (ValueError, TypeError) as error:
            raise InvalidURL(f"Bad option {key}={value!r} in {url!r}: {error}") from None
    if unknown and not passthrough:
        raise InvalidURL(f"Unknown option(s) {[key for key, _ in unknown]} in {url!r}; "
                         f"known options are {sorted(spec)}")
    return options, unknown


def positive_int(text):
    value = int(text)
    if value <= 0:
        raise ValueError(f"must be a positive integer, not {value}")
    return value


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise ValueError(f"must be a non-negative integer, not {value}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0:
        raise ValueError(f"must be a positive number of seconds, not {value}")
    return value
