"""Safe text for the ledger: account components and strings that cannot break out.

Customer-supplied text (organization names, descriptions) is escaped, never trusted:
quotes and backslashes are escaped the way Beancount's lexer unescapes them, and any
control, line-separator or bidirectional-override character is refused (the workspace
configuration refuses them earlier too). Account components derived from ids are checked
against Beancount's account grammar. The writer re-parses everything it writes, so an
escape that did not hold would be caught before it reaches the file.
"""

from __future__ import annotations

import re

from beanbill.rating.characters import REFUSED_CHARACTERS
from beanbill.rating.errors import BeanbillError

ACCOUNT_COMPONENT = re.compile(r"^[A-Z0-9][A-Za-z0-9-]*$")
ACCOUNT_NAME = re.compile(r"^(Assets|Liabilities|Equity|Income|Expenses)(:[A-Z0-9][A-Za-z0-9-]*)+$")
METADATA_KEY = re.compile(r"^[a-z][a-zA-Z0-9_-]*$")
MAX_STRING_LENGTH = 1_000


class LedgerTextError(BeanbillError):
    """A text cannot be written into the ledger safely."""


def quoted(text: str) -> str:
    """A Beancount string literal whose parsed value is exactly ``text``."""
    if REFUSED_CHARACTERS.search(text):
        raise LedgerTextError(f"{text!r} holds control or direction-override characters")
    if len(text) > MAX_STRING_LENGTH:
        raise LedgerTextError(f"text of {len(text)} characters is longer than {MAX_STRING_LENGTH}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def account_component(identifier: str) -> str:
    """An organization id as one account component: 'org-0001' → 'Org-0001'.

    Ids allow '.' and '_', which accounts do not: both become '-'. Callers must check
    that distinct ids do not map to one component (see ``components_by_id``).
    """
    component = re.sub(r"[._]", "-", identifier)
    component = component[:1].upper() + component[1:]
    if not ACCOUNT_COMPONENT.fullmatch(component):
        raise LedgerTextError(f"id {identifier!r} cannot become an account component")
    return component


def components_by_id(identifiers: list[str]) -> dict[str, str]:
    components: dict[str, str] = {}
    owners: dict[str, str] = {}
    for identifier in identifiers:
        component = account_component(identifier)
        other = owners.get(component)
        if other is not None and other != identifier:
            raise LedgerTextError(
                f"organization ids {other!r} and {identifier!r} both map to account "
                f"component {component!r}; rename one"
            )
        owners[component] = identifier
        components[identifier] = component
    return components


def check_metadata_key(key: str) -> str:
    if not METADATA_KEY.fullmatch(key):
        raise LedgerTextError(f"{key!r} is not a valid metadata key")
    return key
