"""``--help`` without ``<bool>`` after flags.

Typer 0.29 prints a value type after every option, flags included, so ``--help``
itself reads ``--help <bool>`` as if it took a value. A flag takes none: this shows
no type for flags (``--json``, ``--public/--private``), and keeps ``<int>``,
``<path>`` and the rest for options that take a value. Imported once by the CLI root.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperOption

_typed = TyperOption.display_type_rich


def _display_type_rich(self: TyperOption, ctx: Any) -> str | None:
    if self.is_flag and not self.count:
        return None
    return _typed(self, ctx)


def install() -> None:
    """Idempotent: flags show no value type in ``--help``."""
    TyperOption.display_type_rich = _display_type_rich  # type: ignore[method-assign]
