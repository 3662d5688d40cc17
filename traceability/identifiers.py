"""Unit numbers: ISBT 128 Donation Identification Numbers (DINs), Codabar numbers and local numbers.

Every unit number entering the system goes through :func:`parse_unit_number`, which returns a
:class:`UnitNumber` holding the canonical stored value and its scheme, or raises
:class:`~traceability.errors.InvalidUnitNumber` (exit code 5) naming the input and the exact problem.

ISBT 128 (ST-001 section 2.4.1)
    The canonical value is the 13-character DIN ``αppppyynnnnnn``: ``α`` is A-N, P-Z or 1-9 (no O, no 0), the
    next two characters are A-N, P-Z or 0-9, then two digits (end of the FIN), two year digits and a six-digit
    sequence number. These forms are accepted; spaces anywhere are ignored and lower case is read as upper case:

    * ``G123417654321``        the DIN itself (13 characters)
    * ``G123417654321A``       DIN + keyboard check character (14), also printed ``G1234 17 654321 A``
    * ``G12341765432170``      DIN + 2 flag characters (15), the bar-code content without ``=``
    * ``W00000912345602G``     DIN + flags + check character (16), printed ``W0000 09 123456 02 G``
    * ``=G12341765432170``     the scanned data structure: ``=`` + DIN + 2 flag characters

    The keyboard check character (ISO/IEC 7064 MOD 37-2) is verified whenever present. Flags 60-96 are Type 3
    check flags (60 + the MOD 37-2 checksum) and must match; flags 97-99 are reserved and refused; any other
    flag built from 0-9, A-H, J-N, P, R-Y is kept as given in ``UnitNumber.flag``.

Codabar
    Digits, optionally between a Codabar start and stop character (A-D, both or neither). The canonical value
    is the digits alone. Auto-detection needs 7-16 digits; with ``scheme="codabar"`` any 1-40 digits do.

Local
    1-40 characters from the ASCII letters, digits and ``- _ / .``, kept exactly as given (case included).

Auto-detection (``scheme=None``) is deterministic; the first rule that applies decides:

1. Text starting with ``=`` is an ISBT 128 data structure. It is accepted only if valid, otherwise refused.
2. Text whose space-free, upper-cased form is 13-16 characters, begins with a well-formed DIN and continues
   only with check-alphabet characters (0-9, A-Z, ``*``) is ISBT 128, accepted only if its flags and check
   character are valid. A wrong check character is therefore refused, never stored as a local number.
   An all-digit string of 13-16 digits starting with 1-9 has this shape too, so it is read as a DIN.
3. Text without inner spaces that is 7-16 digits, optionally wrapped in Codabar start/stop characters, is
   Codabar. This covers 7-12 digits and 13-16 digits starting with 0 (which no DIN can).
4. Text that misses the DIN structure by a single character (13-16 characters of the check alphabet, e.g. the
   letter O typed for a zero) is refused with the DIN explanation: it was almost certainly meant as a DIN.
   Text with inner spaces is refused the same way, since only a printed DIN may contain spaces.
5. Anything else is validated as a local number.

Pass ``scheme`` explicitly to override detection, e.g. for a 13-16 digit Codabar number or a local number
that happens to look like a DIN.
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from stdnum.iso7064 import mod_37_2

from traceability.errors import InvalidUnitNumber

__all__ = [
    "UnitNumber",
    "UnitScheme",
    "din_check_character",
    "din_type3_flag",
    "parse_unit_number",
]


class UnitScheme(StrEnum):
    """How a unit number is encoded. A str subclass, so ``str(UnitScheme.LOCAL) == "local"``."""

    ISBT128 = "isbt128"
    CODABAR = "codabar"
    LOCAL = "local"


@dataclass(frozen=True)
class UnitNumber:
    """A parsed unit number: the canonical stored value, its scheme, and the flag characters if any were given.

    Build one with :func:`parse_unit_number`; the constructor itself does not validate.
    """

    value: str
    scheme: UnitScheme
    flag: str | None = None

    def __str__(self) -> str:
        return self.value


# ISO/IEC 7064 MOD 37-2 value table (ST-001 RT035): a character's index is its value.
CHECK_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"
_DIGITS = frozenset(string.digits)
_FIRST_CHARS = frozenset("ABCDEFGHIJKLMNPQRSTUVWXYZ123456789")
_FIN_CHARS = frozenset("ABCDEFGHIJKLMNPQRSTUVWXYZ0123456789")
_FLAG_CHARS = frozenset("0123456789ABCDEFGHJKLMNPRSTUVWXY")
_CHECK_CHARS = frozenset(CHECK_ALPHABET)
_DIN_LENGTH = 13
_DIN_RE = re.compile(r"[A-NP-Z1-9][A-NP-Z0-9]{2}[0-9]{10}")
# (allowed characters, how a message describes them) for each of the 13 DIN positions.
_DIN_POSITIONS = (
    [(_FIRST_CHARS, "A-N, P-Z or 1-9")] + [(_FIN_CHARS, "A-N, P-Z or 0-9")] * 2 + [(_DIGITS, "a digit")] * 10
)
_DIN_SHAPE = (
    "an ISBT 128 DIN is 13 characters such as G123417654321 (A-N, P-Z or 1-9; two of A-N, P-Z or 0-9; then "
    "10 digits), optionally followed by 2 flag characters and/or the keyboard check character, or scanned as "
    "=G12341765432100"
)

_CODABAR_STARTSTOP = frozenset("ABCD")
_CODABAR_AUTO_RE = re.compile(r"([A-D][0-9]{7,16}[A-D]|[0-9]{7,16})")
_MAX_LENGTH = 40
_LOCAL_CHARS = frozenset(string.ascii_letters + string.digits + "-_/.")

# Printed labels and copied documents separate DIN groups with these; other inner whitespace is not expected.
_SPACES_RE = re.compile("[ \t\u00a0\u2007\u202f]+")
# Only ASCII letters are upper-cased: str.upper() maps e.g. the dotless 'ı' to 'I', which would let a
# non-ASCII look-alike pass as a valid DIN.
_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)
_SHOWN_MAX = 80
# A DIN with one or two characters missing (11-12 characters, a letter first): a keying slip, not a local number.
_SHORT_DIN_RE = re.compile(r"[A-NP-Z][A-NP-Z0-9]{2}[0-9]{8,9}")
_SEPARATORS_RE = re.compile(r"[-/.]")


def din_check_character(din: str) -> str:
    """Return the ISO/IEC 7064 MOD 37-2 keyboard check character for a 13-character DIN.

    Example: ``din_check_character("G123417654321") == "A"``. Lower case is accepted; anything that is not a
    well-formed DIN raises InvalidUnitNumber.
    """
    return mod_37_2.calc_check_digit(_require_din(din))


def din_type3_flag(din: str) -> str:
    """Return the Type 3 flag ("60".."96") for a 13-character DIN: 60 plus its MOD 37-2 checksum.

    Example: ``din_type3_flag("G123417654321") == "70"``. Raises InvalidUnitNumber for a malformed DIN.
    """
    return str(CHECK_ALPHABET.index(din_check_character(din)) + 60)


def parse_unit_number(text: str, scheme: UnitScheme | str | None = None) -> UnitNumber:
    """Parse a scanned, typed or printed unit number into its canonical form.

    ``scheme`` is a UnitScheme, its value ("isbt128", "codabar", "local"), or None to detect the scheme by the
    rules in this module's docstring. Raises InvalidUnitNumber, naming the input and the problem, for anything
    that is not a valid number of the (given or detected) scheme, and for an unknown scheme.
    """
    if not isinstance(text, str):
        raise InvalidUnitNumber(repr(text), "a unit number must be text")
    # Full-width and other compatibility forms (a Japanese keyboard's digits) are read as the ASCII they stand
    # for, so that a look-alike cannot become a second unit number.
    text = unicodedata.normalize("NFKC", text)
    if scheme is None and len(text) == _DIN_LENGTH and _DIN_RE.fullmatch(text):
        return UnitNumber(text, UnitScheme.ISBT128)  # already canonical, as in import files: nothing to undo
    stripped = text.strip()
    if not stripped:
        raise InvalidUnitNumber(text, "it is empty")
    shown = stripped if len(stripped) <= _SHOWN_MAX else stripped[: _SHOWN_MAX - 3] + "..."
    wanted = _coerce_scheme(scheme, shown)
    if wanted is UnitScheme.ISBT128:
        return _parse_isbt(shown, stripped)
    if wanted is UnitScheme.CODABAR:
        return _parse_codabar(shown, stripped)
    if wanted is UnitScheme.LOCAL:
        return _parse_local(shown, stripped)
    return _detect(shown, stripped)


# --- detection -------------------------------------------------------------------------------------------------


def _detect(shown: str, stripped: str) -> UnitNumber:
    compact = _SPACES_RE.sub("", stripped)
    key = compact.translate(_ASCII_UPPER)
    if key.startswith("=") or _has_din_shape(key):
        return _parse_isbt(shown, stripped)
    has_inner_spaces = compact != stripped
    if not has_inner_spaces and _CODABAR_AUTO_RE.fullmatch(key):
        return _parse_codabar(shown, stripped)
    if _is_near_din(key):
        return _parse_isbt(shown, stripped)  # always refuses: the structure check fails
    if not has_inner_spaces and _SHORT_DIN_RE.fullmatch(key):
        raise InvalidUnitNumber(
            shown, f"it looks like an ISBT 128 DIN with a character missing ({len(key)} characters); {_DIN_SHAPE}"
        )
    separated = _SEPARATORS_RE.sub("", key)
    if separated != key and (_has_din_shape(separated) or _is_near_din(separated)):
        raise InvalidUnitNumber(
            shown, f"an ISBT 128 DIN has no separators such as '-', '/' or '.' between its parts; {_DIN_SHAPE}"
        )
    if has_inner_spaces:
        try:
            _parse_isbt(shown, stripped)
        except InvalidUnitNumber as error:
            raise InvalidUnitNumber(
                shown, f"spaces are allowed only in a printed ISBT 128 DIN, and this is not one: {error.problem}"
            ) from None
    return _parse_local(shown, stripped)


def _has_din_shape(key: str) -> bool:
    return (
        _DIN_LENGTH <= len(key) <= _DIN_LENGTH + 3
        and _DIN_RE.fullmatch(key[:_DIN_LENGTH]) is not None
        and all(ch in _CHECK_CHARS for ch in key[_DIN_LENGTH:])
    )


def _is_near_din(key: str) -> bool:
    # One wrong character in a DIN is the commonest keying slip; storing it as a local number would hide it.
    return (
        _DIN_LENGTH <= len(key) <= _DIN_LENGTH + 3
        and all(ch in _CHECK_CHARS for ch in key)
        and len(_din_structure_problems(key[:_DIN_LENGTH])) <= 1
    )


def _coerce_scheme(scheme: UnitScheme | str | None, shown: str) -> UnitScheme | None:
    if scheme is None or isinstance(scheme, UnitScheme):
        return scheme
    if isinstance(scheme, str):
        name = scheme.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
        for member in UnitScheme:
            if name == member.value:
                return member
    choices = ", ".join(member.value for member in UnitScheme)
    raise InvalidUnitNumber(shown, f"unknown unit-number scheme {scheme!r}; use one of {choices}")


# --- ISBT 128 --------------------------------------------------------------------------------------------------


def _parse_isbt(shown: str, stripped: str) -> UnitNumber:
    key = _SPACES_RE.sub("", stripped).translate(_ASCII_UPPER)
    flag: str | None = None
    check: str | None = None
    if key.startswith("="):
        body = key[1:]
        if len(body) != _DIN_LENGTH + 2:
            raise InvalidUnitNumber(
                shown,
                f"'=' must be followed by the 13-character DIN and 2 flag characters (15 in all), "
                f"not {len(body)} characters; {_DIN_SHAPE}",
            )
        din, flag = body[:_DIN_LENGTH], body[_DIN_LENGTH:]
    elif len(key) == _DIN_LENGTH:
        din = key
    elif len(key) == _DIN_LENGTH + 1:
        din, check = key[:_DIN_LENGTH], key[_DIN_LENGTH]
    elif len(key) == _DIN_LENGTH + 2:
        din, flag = key[:_DIN_LENGTH], key[_DIN_LENGTH:]
    elif len(key) == _DIN_LENGTH + 3:
        din, flag, check = key[:_DIN_LENGTH], key[_DIN_LENGTH : _DIN_LENGTH + 2], key[_DIN_LENGTH + 2]
    else:
        count = f"{len(key)} character{'s' if len(key) != 1 else ''}"
        raise InvalidUnitNumber(shown, f"it has {count} without spaces; {_DIN_SHAPE}")

    structure = _din_structure_problems(din)
    if structure:
        raise InvalidUnitNumber(shown, f"{din} is not a valid DIN: {'; '.join(structure[:3])}; {_DIN_SHAPE}")
    problems = []
    if flag is not None:
        problems += _flag_problems(din, flag)
    if check is not None:
        problems += _check_problems(din, check)
    if problems:
        raise InvalidUnitNumber(shown, "; ".join(problems))
    return UnitNumber(din, UnitScheme.ISBT128, flag)


def _din_structure_problems(din: str) -> list[str]:
    return [
        f"character {position} {ch!r} must be {described}"
        for position, (ch, (allowed, described)) in enumerate(zip(din, _DIN_POSITIONS, strict=True), start=1)
        if ch not in allowed
    ]


def _flag_problems(din: str, flag: str) -> list[str]:
    if any(ch not in _FLAG_CHARS for ch in flag):
        return [f"flag characters {flag} are not valid: each must be 0-9, A-H, J-N, P or R-Y"]
    if not all(ch in _DIGITS for ch in flag):
        return []
    number = int(flag)
    if 60 <= number <= 96:
        expected = din_type3_flag(din)
        if flag != expected:
            return [f"Type 3 flag {flag} does not match the check value {expected} for DIN {din}"]
    elif number >= 97:
        return [f"flag {flag} is reserved (ISBT 128 flags 97-99 are not assigned)"]
    return []


def _check_problems(din: str, check: str) -> list[str]:
    if check not in _CHECK_CHARS:
        return [f"{check!r} cannot be a keyboard check character (0-9, A-Z or *)"]
    expected = din_check_character(din)
    if check != expected:
        return [f"check character {check} does not match {expected} for DIN {din}"]
    return []


def _require_din(din: str) -> str:
    if not isinstance(din, str):
        raise InvalidUnitNumber(repr(din), "a DIN must be text")
    key = din.translate(_ASCII_UPPER)
    if len(key) != _DIN_LENGTH:
        raise InvalidUnitNumber(din, f"a DIN has 13 characters, not {len(key)}; {_DIN_SHAPE}")
    structure = _din_structure_problems(key)
    if structure:
        raise InvalidUnitNumber(din, f"{'; '.join(structure[:3])}; {_DIN_SHAPE}")
    return key


# --- Codabar and local -----------------------------------------------------------------------------------------


def _parse_codabar(shown: str, stripped: str) -> UnitNumber:
    key = stripped.translate(_ASCII_UPPER)
    starts, stops = key[0] in _CODABAR_STARTSTOP, key[-1] in _CODABAR_STARTSTOP
    if len(key) >= 2 and starts and stops:
        digits = key[1:-1]
    elif starts or stops:
        raise InvalidUnitNumber(
            shown, "a Codabar number needs both a start and a stop character (A-D), or neither, around its digits"
        )
    else:
        digits = key
    bad = next((ch for ch in digits if ch not in _DIGITS), None)
    if bad is not None:
        raise InvalidUnitNumber(
            shown, f"{bad!r} is not allowed: a Codabar number is digits, optionally between start/stop characters A-D"
        )
    if not digits or len(digits) > _MAX_LENGTH:
        raise InvalidUnitNumber(shown, f"a Codabar number has 1-{_MAX_LENGTH} digits, not {len(digits)}")
    return UnitNumber(digits, UnitScheme.CODABAR)


def _parse_local(shown: str, stripped: str) -> UnitNumber:
    problems = []
    if len(stripped) > _MAX_LENGTH:
        problems.append(f"it is longer than {_MAX_LENGTH} characters ({len(stripped)})")
    for position, ch in enumerate(stripped, start=1):
        if ch in _LOCAL_CHARS:
            continue
        if ch.isspace() and unicodedata.category(ch) == "Zs":
            what = f"a space at position {position}"
        elif unicodedata.category(ch).startswith("C"):
            what = f"control character {ch!r} at position {position}"
        elif not ch.isascii():
            # Non-ASCII look-alikes (Cyrillic А, fullwidth digits) would make distinct numbers that print the same.
            what = f"non-ASCII character {ch!r} at position {position}"
        else:
            what = f"character {ch!r} at position {position}"
        problems.append(f"{what} is not allowed: only letters, digits and - _ / . are allowed")
        break
    if problems:
        raise InvalidUnitNumber(shown, "; ".join(problems))
    return UnitNumber(stripped, UnitScheme.LOCAL)
