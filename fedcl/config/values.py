"""Value types of the config schema: what a number, count or name must be, declared once.

Each type carries a :class:`Meaning`, the words an error message uses for it
("train.lr must be a finite number > 0: got inf").
"""

from dataclasses import dataclass
from typing import Annotated, Any

from annotated_types import Interval
from pydantic import AllowInfNan, Strict, StringConstraints


@dataclass(frozen=True)
class Meaning:
    """What a value must be, in words (ignored by pydantic, read by the error messages)."""

    text: str


def _interval_words(ge: float | None, gt: float | None, le: float | None, lt: float | None) -> str:
    low = f"[{ge}" if ge is not None else f"({gt}" if gt is not None else None
    high = f"{le}]" if le is not None else f"{lt})" if lt is not None else None
    if low and high:
        return f"in {low}, {high}"
    if low:
        return f">= {ge}" if ge is not None else f"> {gt}"
    return f"<= {le}" if le is not None else f"< {lt}" if lt is not None else ""


def real(*, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None) -> Any:
    """A finite float (an integer is accepted and converted) within the given bounds."""
    words = " ".join(w for w in ("a finite number", _interval_words(ge, gt, le, lt)) if w)
    return Annotated[float, Strict(), Interval(ge=ge, gt=gt, le=le, lt=lt), AllowInfNan(False), Meaning(words)]


def integer(ge: int, le: int) -> Any:
    """An integer in [ge, le] (true/false are not integers)."""
    return Annotated[int, Strict(), Interval(ge=ge, le=le), Meaning(f"an integer in [{ge}, {le}]")]


def text(pattern: str | None = None, meaning: str | None = None) -> Any:
    """A string, optionally matching ``pattern`` (described by ``meaning``)."""
    if pattern is None:
        return Annotated[str, Strict()]
    return Annotated[str, Strict(), StringConstraints(pattern=pattern), Meaning(meaning or f"a string matching {pattern}")]


Flag = Annotated[bool, Strict()]
Name = text()

#: largest number of clients, rounds per task, tasks... (keeps every count and product far from overflow)
MAX_COUNT = 100_000
#: largest seed: what numpy and torch generators accept
MAX_SEED = 2**32 - 1
#: largest image side in pixels
MAX_IMAGE_SIZE = 1024
#: largest thread count for intra-op parallelism
MAX_THREADS = 1024
#: largest round timeout or node wait: one week
MAX_WAIT_S = 7 * 24 * 3600.0

Seed = integer(0, MAX_SEED)
Count = integer(1, MAX_COUNT)
CountOrZero = integer(0, MAX_COUNT)
Rate = real(gt=0)
NonNegative = real(ge=0)
