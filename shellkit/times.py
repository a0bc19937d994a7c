"""Times for people and for machines.

People read Beijing time (China Standard Time, UTC+8, no daylight saving) with the
zone named in Chinese and English; machines read UTC in ISO 8601 with ``Z``.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["CHINA_STANDARD_TIME", "UTC", "iso_utc", "beijing", "beijing_date", "human_duration"]

UTC = dt.timezone.utc
CHINA_STANDARD_TIME = dt.timezone(dt.timedelta(hours=8), "CST")


def _aware(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no zone: pass an aware one")
    return moment


def iso_utc(moment: dt.datetime) -> str:
    """``2026-12-07T04:17:38Z``: UTC, seconds, for logs, JSON and files."""
    return _aware(moment).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def beijing(moment: dt.datetime, *, seconds: bool = False) -> str:
    """``2026-12-07 12:17 北京时间 (CST)``: what a person reads, in China Standard Time."""
    local = _aware(moment).astimezone(CHINA_STANDARD_TIME)
    return local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + " 北京时间 (CST)"


def beijing_date(moment: dt.datetime) -> dt.date:
    """The calendar date in Beijing at ``moment`` (a date of birth, a day's batch)."""
    return _aware(moment).astimezone(CHINA_STANDARD_TIME).date()


def human_duration(delta: dt.timedelta) -> str:
    """``3 d 4 h``, ``5 h 2 min``, ``45 s``: the two largest units, for messages people read."""
    total = int(abs(delta.total_seconds()))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (secs, "s")]
    shown = [f"{n} {unit}" for n, unit in parts if n][:2]
    text = " ".join(shown) if shown else "0 s"
    return f"-{text}" if delta.total_seconds() < 0 else text
