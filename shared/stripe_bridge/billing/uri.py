"""RFC 3986 URI-references: what OpenMeter's Event schema requires of a CloudEvent ``source``.

The pattern is the RFC's ABNF (sections 3 and 4.1) written as one regular expression;
IP literals are checked for their characters only, not for a well-formed IPv6 address.
"""

from __future__ import annotations

import functools
import re

_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_PCT = r"%[0-9A-Fa-f]{2}"
_PCHAR = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT})"
_SEGMENT = rf"{_PCHAR}*"
_SEGMENT_NZ = rf"{_PCHAR}+"
# The first segment of a relative path takes no ":" (it would read as a scheme).
_SEGMENT_NZ_NC = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}@]|{_PCT})+"
_PATH_ABEMPTY = rf"(?:/{_SEGMENT})*"
_PATH_ABSOLUTE = rf"/(?:{_SEGMENT_NZ}(?:/{_SEGMENT})*)?"
_PATH_ROOTLESS = rf"{_SEGMENT_NZ}(?:/{_SEGMENT})*"
_PATH_NOSCHEME = rf"{_SEGMENT_NZ_NC}(?:/{_SEGMENT})*"
_USERINFO = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT})*"
_HOST = (
    rf"(?:\[[0-9A-Fa-f:.]+\]|\[v[0-9A-Fa-f]+\.[{_UNRESERVED}{_SUB_DELIMS}:]+\]"
    rf"|(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT})*)"
)
_AUTHORITY = rf"(?:{_USERINFO}@)?{_HOST}(?::[0-9]*)?"
_QUERY = rf"(?:{_PCHAR}|[/?])*"
_SCHEME = r"[A-Za-z][A-Za-z0-9+\-.]*"
_HIER_PART = rf"(?://{_AUTHORITY}{_PATH_ABEMPTY}|{_PATH_ABSOLUTE}|{_PATH_ROOTLESS}|)"
_RELATIVE_PART = rf"(?://{_AUTHORITY}{_PATH_ABEMPTY}|{_PATH_ABSOLUTE}|{_PATH_NOSCHEME}|)"
_URI_REFERENCE = re.compile(
    rf"(?:{_SCHEME}:{_HIER_PART}|{_RELATIVE_PART})(?:\?{_QUERY})?(?:#{_QUERY})?"
)


# Producers send a handful of sources over and over; the match costs microseconds each.
@functools.lru_cache(maxsize=1024)
def is_uri_reference(value: str) -> bool:
    """Whether ``value`` is a URI-reference (RFC 3986 section 4.1): a URI or a relative one."""
    return _URI_REFERENCE.fullmatch(value) is not None
