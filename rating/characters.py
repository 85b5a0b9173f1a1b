"""The characters beanbill refuses in any text it keeps, defined once.

C0 and C1 controls, the Unicode line and paragraph separators, and the bidirectional
embedding, override and isolate controls: text with them can hide or reorder what a
reader sees in a ledger, an invoice or a log, or break out of a line. Surrogates and
noncharacters (U+FFFE, U+FFFF, ...): an XML 1.0 document or a PDF cannot hold them, so an
invoice naming them could never be rendered. The same set is
offered as a Python pattern (configuration, ledger text) and as an RE2 class for DuckDB
(usage events at ingest).
"""

from __future__ import annotations

import re

REFUSED_RANGES = (
    (0x00, 0x1F),  # C0 controls (tab, newline, ... included)
    (0x7F, 0x9F),  # DEL and C1 controls
    (0x2028, 0x2029),  # line and paragraph separators
    (0x202A, 0x202E),  # bidirectional embeddings and overrides
    (0x2066, 0x2069),  # bidirectional isolates
    (0xD800, 0xDFFF),  # surrogates: not characters, no UTF-8 or XML can carry them alone
    (0xFDD0, 0xFDEF),  # noncharacters
    (0xFFFE, 0xFFFF),  # noncharacters (not XML 1.0 characters)
    *((plane + 0xFFFE, plane + 0xFFFF) for plane in range(0x10000, 0x110000, 0x10000)),
)

REFUSED_CHARACTERS = re.compile(
    "[" + "".join(f"{chr(low)}-{chr(high)}" for low, high in REFUSED_RANGES) + "]"
)
# RE2 syntax (DuckDB's regexp functions): \x{HHHH}.
REFUSED_CHARACTERS_RE2 = (
    "[" + "".join(f"\\x{{{low:x}}}-\\x{{{high:x}}}" for low, high in REFUSED_RANGES) + "]"
)
