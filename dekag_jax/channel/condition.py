"""The transmission condition phi = (tau, gamma, omega) of the paper (Sec. II-B, VI-A2): one type.

``Condition(tau, snr_db, delay_spread_s)`` is a frozen, hashable dataclass:

* ``tau``: the rate, complex symbols per image pixel (K = tau X), an exact ``Fraction``; by
  default validated against the paper's set {1/64, ..., 6/64} (Sec. V-B: the JSCC encoder's
  truncation to 128 tau of 12 channels).
* ``snr_db``: gamma = P_h / P_delta in dB (any finite float).
* ``delay_spread_s``: omega, the rms delay spread of eq. 3, in SECONDS (finite, > 0). Values
  above ``MAX_DELAY_SPREAD_S`` (100 us; outdoor rms delay spreads are at most a few us) are
  refused as implausible: they are nearly always a number meant in ns.

Everything that needs a condition takes one (``channel.montecarlo``, ``channel.amc``,
``dekag_jax.sweep``, the baselines); ``as_condition`` also accepts the legacy tuple
``(tau, snr_db, delay_spread_s)``. For CALA's gate (eq. 10) :meth:`Condition.phi` gives the raw
``(tau, gamma_dB, omega_s)`` floats and :func:`phi_array` a batched ``[..., 3]`` float array of
them; any normalisation of these inputs is the gate's business, not this module's.

Parsing with explicit units (command lines, configs): :func:`parse_rate` (``"2/64"``,
``"0.03125"``), :func:`parse_snr_db` (``"10"``, ``"10dB"``), :func:`parse_delay_spread`
(``"3000ns"``, ``"3us"``, ``"3µs"``, ``"3e-6s"``, a bare number is seconds) and
:meth:`Condition.parse` (``"2/64,10dB,3000ns"``). Bad input raises :class:`ConditionError` (a
``ValueError``) with one line naming the value, with a hint where the number looks like it was
meant in another unit (``3000`` seconds -> "did you mean 3000ns?"); :func:`delay_spread_unit_hint`
words that hint for every module that checks delay spreads (one wording).

The grid Phi_EU of the paper (Sec. VI-A2, T-KA): tau in {2..6}/64 ("ensuring an integer number
of cut-off channels"), gamma in {0, 5, ..., 20} dB, omega in {30, 300, 3000} ns:
:data:`PHI_EU_TAUS`, :data:`PHI_EU_SNRS_DB`, :data:`PHI_EU_DELAY_SPREADS_S` and
:func:`phi_eu_grid` (75 conditions, tau-major). :class:`ConditionGrid` holds such a grid as three
validated value lists: the one place for the rates, SNRs and delay spreads that training samples
from (``ka.codec_training``, ``ka.tka``) and that grids list.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import re
from decimal import Decimal
from fractions import Fraction
from typing import Iterable, Sequence, Union

import numpy as np

__all__ = [
    "RATES", "MAX_DELAY_SPREAD_S", "PHI_EU_TAUS", "PHI_EU_SNRS_DB", "PHI_EU_DELAY_SPREADS_S",
    "ConditionError", "Condition", "ConditionLike", "check_rate", "as_condition", "phi_eu_grid",
    "phi_array", "parse_rate", "parse_snr_db", "parse_delay_spread", "ns_to_s", "SNR_DB_RANGE",
    "ConditionGrid", "delay_spread_unit_hint",
]

#: Rates of the paper (Sec. V-B): tau in {1/64, ..., 6/64} symbols per pixel.
RATES = tuple(Fraction(i, 64) for i in range(1, 7))
#: Largest accepted delay spread (seconds). Real rms delay spreads are ns to a few us.
MAX_DELAY_SPREAD_S = 1e-4
#: Phi_EU of Sec. VI-A2 (T-KA): rates, SNRs and delay spreads.
PHI_EU_TAUS = tuple(Fraction(i, 64) for i in range(2, 7))
PHI_EU_SNRS_DB = (0.0, 5.0, 10.0, 15.0, 20.0)
PHI_EU_DELAY_SPREADS_S = (30e-9, 300e-9, 3000e-9)
#: Plausible gamma (dB) for training grids and the link's host checks: beyond it a value is a unit
#: mistake (a linear SNR, or Hz). A single ``Condition`` takes any finite gamma.
SNR_DB_RANGE = (-50.0, 200.0)


class ConditionError(ValueError):
    """A rate, SNR or delay spread that is not a valid transmission condition (one-line message)."""


def _allowed(rates) -> str:
    return "{" + ", ".join(f"{(r * 64).numerator}/64" if (r * 64).denominator == 1 else str(r)
                           for r in rates) + "}"


def check_rate(tau, rates: Sequence[Fraction] = RATES) -> Fraction:
    """Validate tau against ``rates`` (default {1/64, ..., 6/64}); returns it as an exact Fraction.

    Accepts a Fraction, a float within 1e-9 of i/64, or a string ("2/64", "0.03125").
    Raises :class:`ConditionError` naming tau otherwise.
    """
    allowed = _allowed(rates)
    if isinstance(tau, str):
        return parse_rate(tau, rates)
    if isinstance(tau, Fraction):
        t = tau
    else:
        try:
            t = Fraction(float(tau)).limit_denominator(64)
        except (TypeError, ValueError, OverflowError):
            raise ConditionError(f"rate tau={tau!r} is not a number; allowed: {allowed}") from None
        if abs(float(t) - float(tau)) > 1e-9:
            t = None
    if t not in rates:
        shown = str(tau) if isinstance(tau, Fraction) else repr(tau)
        raise ConditionError(f"rate tau={shown} is not in {allowed} symbols per pixel (paper Sec. V-B)")
    return t


def parse_rate(text: str, rates: Sequence[Fraction] = RATES) -> Fraction:
    """tau from text: ``"2/64"``, ``"1/32"``, ``"0.03125"`` (symbols per pixel). A bare integer
    such as ``"2"`` is refused with the hint ``did you mean 2/64?``."""
    s = str(text).strip()
    try:
        t = Fraction(s)
    except (ValueError, ZeroDivisionError):
        raise ConditionError(f"rate tau={text!r} is not a number; write it as i/64, e.g. 2/64") from None
    if t not in rates:
        hint = (f"; did you mean {t.numerator}/64?"
                if t.denominator == 1 and Fraction(t, 64) in rates else " (paper Sec. V-B)")
        raise ConditionError(f"rate tau={text!r} is not in {_allowed(rates)} symbols per pixel{hint}")
    return t


_SNR_RE = re.compile(r"^\s*([-+]?[0-9.]+(?:e[-+]?\d+)?)\s*(db)?\s*$", re.IGNORECASE)


def parse_snr_db(text) -> float:
    """gamma in dB from ``"10"``, ``"10dB"``, ``"-3.5 dB"`` or a number (finite)."""
    if isinstance(text, (int, float, np.floating, np.integer)):
        v = float(text)
    else:
        m = _SNR_RE.match(str(text))
        if not m:
            raise ConditionError(f"SNR {text!r} is not a number of dB (e.g. 10 or 10dB)")
        v = float(m.group(1))
    if not math.isfinite(v):
        raise ConditionError(f"SNR {text!r} dB must be finite")
    return v


_UNITS_S = {"s": "1", "ms": "1e-3", "us": "1e-6", "µs": "1e-6", "μs": "1e-6", "ns": "1e-9"}


def ns_to_s(x) -> float:
    """Nanoseconds to seconds in decimal, so ``ns_to_s(30) == 30e-9`` exactly as written
    (``30 * 1e-9`` is 3.0000000000000004e-08)."""
    return float(Decimal(repr(float(x))) * Decimal("1e-9"))
_DELAY_RE = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*([a-zµμ]*)\s*$", re.IGNORECASE)


def delay_spread_unit_hint(value: float, unit: str = "s") -> str:
    """The one hint for a delay spread number written in the wrong unit: ``value`` as given, read
    in ``unit``. ``"s"``: a number of nanoseconds given as seconds (``3000`` -> ``"did you mean
    3000ns?"``); ``"ns"``: a number of seconds in a nanosecond field (``3e-06`` -> ``"did you mean
    3e-06s = 3000ns?"``). Callers decide when a value is implausible; this only words the hint."""
    if unit == "s":
        return f"did you mean {_fmt_num(value)}ns?"
    if unit == "ns":
        ns = float(Decimal(repr(float(value))) * Decimal("1e9"))  # decimal: 3e-06 s is 3000 ns, not 3000.0000000000005
        return f"did you mean {_fmt_num(value)}s = {_fmt_num(ns)}ns?"
    raise ValueError(f"delay_spread_unit_hint: unit={unit!r}; expected 's' or 'ns'")


def _check_delay_spread(w: float, shown) -> float:
    if not math.isfinite(w):
        raise ConditionError(f"delay spread {shown} must be finite")
    if w <= 0:
        raise ConditionError(f"delay spread {shown} must be > 0 (omega is an rms delay spread)")
    if w > MAX_DELAY_SPREAD_S:
        raise ConditionError(f"delay spread {shown} is implausible (more than "
                             f"{MAX_DELAY_SPREAD_S * 1e6:g} us); {delay_spread_unit_hint(w)}")
    return w


def _fmt_num(x: float) -> str:
    return f"{x:g}" if abs(x) < 1e15 else repr(x)


def parse_delay_spread(text) -> float:
    """omega in SECONDS from ``"3000ns"``, ``"3us"``, ``"3µs"``, ``"0.003ms"``, ``"3e-6s"``, or a
    bare number (seconds). Must be finite, > 0 and <= 100 us (a bare ``3000`` is refused with
    ``did you mean 3000ns?``)."""
    if isinstance(text, (int, float, np.floating, np.integer)):
        return _check_delay_spread(float(text), f"{_fmt_num(float(text))} s")
    m = _DELAY_RE.match(str(text))
    if not m or m.group(2).lower() not in {u.lower() for u in _UNITS_S} | {""}:
        raise ConditionError(f"delay spread {text!r} is not a number with a unit of time "
                             "(e.g. 3000ns, 3us, 3e-6s)")
    unit = m.group(2)
    scale = next((v for u, v in _UNITS_S.items() if u.lower() == unit.lower()), "1")
    shown = f"{text.strip()}" + ("" if unit else " s")
    # decimal arithmetic: "30ns" is the float 30e-9, the same number as a literal 30e-9 in code
    return _check_delay_spread(float(Decimal(m.group(1)) * Decimal(scale)), shown)


def _fmt_delay(w: float) -> str:
    ns = round(w * 1e9, 6)
    return f"{ns:g}ns"


@dataclasses.dataclass(frozen=True)
class Condition:
    """One transmission condition phi = (tau, gamma [dB], omega [s]) (paper Sec. II-B).

    Fields are normalised on construction: ``tau`` to an exact ``Fraction`` in :data:`RATES`,
    ``snr_db`` and ``delay_spread_s`` to finite floats (omega > 0, <= 100 us). Strings with units
    are accepted for every field (``Condition("2/64", "10dB", "3000ns")``). Frozen and hashable.
    """
    tau: Fraction
    snr_db: float
    delay_spread_s: float

    def __post_init__(self):
        object.__setattr__(self, "tau", check_rate(self.tau))
        object.__setattr__(self, "snr_db", parse_snr_db(self.snr_db))
        object.__setattr__(self, "delay_spread_s", parse_delay_spread(self.delay_spread_s))

    @property
    def rate(self) -> Fraction:
        """tau (the paper's name is used as the field; ``rate`` is an alias)."""
        return self.tau

    @property
    def delay_spread_ns(self) -> float:
        return round(self.delay_spread_s * 1e9, 6)

    @property
    def key(self) -> str:
        """Stable, file-name-safe identifier, e.g. ``tau3-64_snr10_omega300ns``."""
        n = self.tau * 64
        return f"tau{n.numerator}-64_snr{self.snr_db:g}_omega{self.delay_spread_ns:g}ns"

    def phi(self) -> tuple[float, float, float]:
        """``(tau, gamma_dB, omega_s)`` as plain floats (the raw inputs of CALA's gate)."""
        return float(self.tau), float(self.snr_db), float(self.delay_spread_s)

    def as_array(self, dtype=np.float32) -> np.ndarray:
        """``[3]`` array ``(tau, gamma_dB, omega_s)``; see :func:`phi_array` for batches."""
        return np.asarray(self.phi(), dtype)

    def num_symbols(self, num_pixels: int) -> int:
        """K = tau X for an image of ``num_pixels`` pixels (ConditionError if not an integer)."""
        K = self.tau * int(num_pixels)
        if K.denominator != 1 or K <= 0:
            raise ConditionError(f"K = tau * X = {self.tau} * {num_pixels} is not a positive integer")
        return int(K)

    def replace(self, **kw) -> "Condition":
        return dataclasses.replace(self, **kw)

    def __str__(self) -> str:
        n = self.tau * 64
        return f"tau={n.numerator}/64, gamma={self.snr_db:g} dB, omega={_fmt_delay(self.delay_spread_s)}"

    @classmethod
    def parse(cls, text: str) -> "Condition":
        """From ``"tau,gamma,omega"`` with units, e.g. ``"2/64,10dB,3000ns"``."""
        parts = [p for p in str(text).split(",")]
        if len(parts) != 3:
            raise ConditionError(f"condition {text!r} must be 'tau,gamma,omega', e.g. 2/64,10dB,3000ns")
        return cls(parse_rate(parts[0]), parse_snr_db(parts[1]), parse_delay_spread(parts[2]))


ConditionLike = Union[Condition, tuple, str]


def as_condition(phi: ConditionLike) -> Condition:
    """A :class:`Condition` from a Condition, a ``(tau, snr_db, delay_spread_s)`` tuple (the
    older calling convention of the baselines) or a ``"tau,gamma,omega"`` string."""
    if isinstance(phi, Condition):
        return phi
    if isinstance(phi, str):
        return Condition.parse(phi)
    if isinstance(phi, (tuple, list)) and len(phi) == 3:
        return Condition(*phi)
    raise ConditionError(f"expected a Condition or (tau, snr_db, delay_spread_s), got {phi!r}")


@dataclasses.dataclass(frozen=True)
class ConditionGrid:
    """A set of conditions as three value lists: tau, gamma and omega, each drawn uniformly and
    independently when sampled (the distribution Phi of eq. 4 pretraining and of eq. 7 / eq. 10,
    drawn per sample inside a jitted step by ``ka.transmission.sample_conditions``), or listed as
    their Cartesian product (:meth:`conditions`; Phi_EU is the default grid).

    * ``rates``: tau values (``Fraction``, ``"2/64"``, or a float within 1e-9 of i/64), each in
      :data:`RATES` -> ``tuple[Fraction, ...]``; ``taus`` is the paper's name for it.
    * ``snrs_db``: gamma in dB (numbers or ``"10dB"``), finite and within :data:`SNR_DB_RANGE`
      (a training grid outside it is a unit mistake) -> ``tuple[float, ...]``.
    * ``delay_spreads_s``: omega in seconds (numbers or ``"300ns"``), > 0 and <= 100 us ->
      ``tuple[float, ...]``.

    All three must be non-empty. Order (and repeats) are kept as given: draws index into these
    tuples, so the same grid and key give the same conditions. Frozen and hashable (a jit static
    argument). Bad values raise :class:`ConditionError` with one line.
    """
    rates: tuple = PHI_EU_TAUS
    snrs_db: tuple = PHI_EU_SNRS_DB
    delay_spreads_s: tuple = PHI_EU_DELAY_SPREADS_S

    def __post_init__(self):
        name = type(self).__name__
        for field in ("rates", "snrs_db", "delay_spreads_s"):
            v = getattr(self, field)
            if isinstance(v, (str, bytes)) or not isinstance(v, Iterable):
                raise ConditionError(f"{name}: {field}={v!r} must be a sequence of values")
        if not self.rates or not self.snrs_db or not self.delay_spreads_s:
            raise ConditionError(f"{name}: rates, snrs_db and delay_spreads_s must all be non-empty")
        lo, hi = SNR_DB_RANGE
        snrs = tuple(parse_snr_db(g) for g in self.snrs_db)
        for g in snrs:
            if not lo <= g <= hi:
                raise ConditionError(f"SNR {g:g} dB is outside [{lo:g}, {hi:g}] dB (is it a linear ratio?)")
        object.__setattr__(self, "rates", tuple(check_rate(t) for t in self.rates))
        object.__setattr__(self, "snrs_db", snrs)
        object.__setattr__(self, "delay_spreads_s", tuple(parse_delay_spread(w) for w in self.delay_spreads_s))

    @property
    def taus(self) -> tuple:
        """tau values (the paper's name; ``rates`` is the field)."""
        return self.rates

    def rate_units(self) -> tuple:
        """n = 64 tau of each rate, in order (``int``)."""
        return tuple(int(t * 64) for t in self.rates)

    def conditions(self) -> list[Condition]:
        """The Cartesian product as :class:`Condition`s, tau-major (then gamma, then omega)."""
        return [Condition(t, g, w) for t, g, w in itertools.product(self.rates, self.snrs_db, self.delay_spreads_s)]

    @classmethod
    def from_config(cls, rates, snrs_db, delay_spreads_ns) -> "ConditionGrid":
        """From a config's fields: ``rates`` a comma-separated string (``"2/64,4/64"``) or a
        sequence, ``snrs_db`` numbers, ``delay_spreads_ns`` numbers of NANOSECONDS."""
        if isinstance(rates, str):
            rates = [r.strip() for r in rates.split(",") if r.strip()]
        return cls(rates=tuple(rates), snrs_db=tuple(snrs_db),
                   delay_spreads_s=tuple(ns_to_s(w) for w in delay_spreads_ns))


def phi_eu_grid(taus: Iterable = PHI_EU_TAUS, snrs_db: Iterable = PHI_EU_SNRS_DB,
                delay_spreads_s: Iterable = PHI_EU_DELAY_SPREADS_S) -> list[Condition]:
    """The Cartesian grid of conditions (default: the paper's Phi_EU, 5 x 5 x 3 = 75), tau-major
    (:meth:`ConditionGrid.conditions`)."""
    return ConditionGrid(tuple(taus), tuple(snrs_db), tuple(delay_spreads_s)).conditions()


def phi_array(conds: Sequence[Condition], dtype=np.float32) -> np.ndarray:
    """``[N, 3]`` array of ``(tau, gamma_dB, omega_s)`` rows (un-normalised; see module doc)."""
    return np.asarray([as_condition(c).phi() for c in conds], dtype).reshape(len(conds), 3)
