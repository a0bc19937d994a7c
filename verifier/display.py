"""The operator's display: the answer at a glance, in Chinese and English.

On a terminal (ANSI) the screen is cleared for each result and shows a large
block-letter VALID (green) or INVALID (red), the reason in plain words in both
languages, the province, and the trust-data age; warnings (aging or stale
trust data, clock behind, a failed sync, an audit log that cannot be
written, a scanner that went away) follow in yellow. On anything else (a
log file, a pipe) each result is one plain line.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from healthcode import PROVINCES, Reason

from .trust import Freshness, format_age

if TYPE_CHECKING:  # pragma: no cover
    from .runtime import Outcome

__all__ = ["REASON_TEXT", "PROVINCE_EN", "Display", "banner", "describe"]

#: The reason in plain words: (Chinese, English).
REASON_TEXT: dict[Reason | None, tuple[str, str]] = {
    None: ("健康码有效", "The health code is valid"),
    Reason.MALFORMED: ("不是有效的健康码（无法识别或扫描不完整）", "Not a readable health code (damaged, partial or another kind of code)"),
    Reason.UNSUPPORTED_VERSION: ("健康码版本不受支持，请更新核验软件", "Code version not supported: update the verifier"),
    Reason.UNKNOWN_KEY: ("签发机构不在信任列表中", "Issuer not trusted (unknown signing key)"),
    Reason.ALGORITHM_MISMATCH: ("签名算法不符，疑似伪造", "Signature algorithm mismatch: possibly forged"),
    Reason.BAD_SIGNATURE: ("签名无效，疑似伪造或被篡改", "Invalid signature: forged or altered"),
    Reason.NOT_YET_VALID: ("健康码尚未生效（请检查本机时间）", "Code not yet valid (check this terminal's clock)"),
    Reason.EXPIRED: ("健康码已过期，请重新申领", "Code expired: the holder needs a new one"),
    Reason.KEY_NOT_VALID_AT_ISSUANCE: ("签发时密钥不在有效期内", "Signed outside the key's validity period"),
    Reason.KEY_COMPROMISED: ("签发密钥已泄露，健康码作废", "Signing key compromised: code not accepted"),
    Reason.REVOKED: ("健康码已被撤销", "Code has been revoked"),
    Reason.TRUST_DATA_STALE: ("信任数据过旧，请联网同步后再核验", "Trust data too old: sync before verifying"),
}

PROVINCE_EN = {
    "11": "Beijing", "12": "Tianjin", "13": "Hebei", "14": "Shanxi", "15": "Inner Mongolia",
    "21": "Liaoning", "22": "Jilin", "23": "Heilongjiang", "31": "Shanghai", "32": "Jiangsu",
    "33": "Zhejiang", "34": "Anhui", "35": "Fujian", "36": "Jiangxi", "37": "Shandong",
    "41": "Henan", "42": "Hubei", "43": "Hunan", "44": "Guangdong", "45": "Guangxi",
    "46": "Hainan", "50": "Chongqing", "51": "Sichuan", "52": "Guizhou", "53": "Yunnan",
    "54": "Tibet", "61": "Shaanxi", "62": "Gansu", "63": "Qinghai", "64": "Ningxia",
    "65": "Xinjiang", "71": "Taiwan", "81": "Hong Kong", "82": "Macao",
}

_FONT = {
    "V": ["█   █", "█   █", "█   █", " █ █ ", "  █  "],
    "A": [" ███ ", "█   █", "█████", "█   █", "█   █"],
    "L": ["█    ", "█    ", "█    ", "█    ", "█████"],
    "I": ["█████", "  █  ", "  █  ", "  █  ", "█████"],
    "D": ["████ ", "█   █", "█   █", "█   █", "████ "],
    "N": ["█   █", "██  █", "█ █ █", "█  ██", "█   █"],
}

_GREEN, _RED, _YELLOW, _BOLD, _RESET = "\x1b[1;32m", "\x1b[1;31m", "\x1b[1;33m", "\x1b[1m", "\x1b[0m"
_CLEAR = "\x1b[2J\x1b[H"


def banner(word: str) -> list[str]:
    """``word`` in 5-row block letters."""
    return ["  ".join(_FONT[ch][row] for ch in word) for row in range(5)]


def describe(outcome: "Outcome") -> tuple[str, str]:
    """The reason in plain words (zh, en), with the specific detail for malformed input."""
    zh, en = REASON_TEXT.get(outcome.reason, REASON_TEXT[Reason.MALFORMED])
    return zh, en


def _province(outcome: "Outcome") -> str | None:
    code = outcome.code
    if code is not None:
        return f"{PROVINCES[code.province]} {PROVINCE_EN[code.province]} ({code.province})"
    if outcome.claimed is not None:
        p = outcome.claimed[0]
        return f"{PROVINCES[p]} {PROVINCE_EN[p]} ({p}, 未验证 unverified)"
    return None


def _trust_line(outcome: "Outcome") -> str:
    trust = outcome.trust
    if trust.age is None:
        return "信任数据: 无 / trust data: none"
    return f"信任数据 {format_age(trust.age)} 前更新 / trust data {format_age(trust.age)} old"


class Display:
    """Writes results and notices for the operator to ``stream`` (never raises)."""

    def __init__(self, stream: TextIO | None = None, *, ansi: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if ansi is None:
            try:
                ansi = self.stream.isatty()
            except (AttributeError, ValueError):
                ansi = False
        self.ansi = ansi

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # the display is best effort; the JSON and the audit log carry the result

    def show(self, outcome: "Outcome", warnings: list[str]) -> None:
        """One result, with the current warnings."""
        self._write(self.render(outcome, warnings))

    def show_rendered(self, screens: list[str]) -> None:
        """Results already rendered (:meth:`render`), in order, with one write (the run loop: per batch)."""
        if screens:
            self._write("".join(screens))

    def render(self, outcome: "Outcome", warnings: list[str]) -> str:
        valid = outcome.code is not None
        word = "VALID" if valid else "INVALID"
        zh, en = describe(outcome)
        province = _province(outcome)
        trust = outcome.trust
        if not self.ansi:
            parts = [f"#{outcome.seq} {word}", f"{zh} / {en}"]
            if not valid and outcome.detail:
                parts.append(outcome.detail)
            if province:
                parts.append(province)
            parts.append(_trust_line(outcome))
            parts += [f"WARNING: {w}" for w in warnings]
            return " | ".join(parts) + "\n"
        colour = _GREEN if valid else _RED
        lines = [_CLEAR]
        lines += [f"{colour}  {row}{_RESET}" for row in banner(word)]
        lines.append("")
        lines.append(f"{_BOLD}  {'有效' if valid else '无效'}：{zh}{_RESET}")
        lines.append(f"{_BOLD}  {word}: {en}{_RESET}")
        if not valid and outcome.detail:
            lines.append(f"  ({outcome.detail})")
        if province:
            lines.append(f"  省份 / province: {province}")
        if outcome.code is not None:
            lines.append(f"  有效期至 / valid until: {outcome.code.expires_at:%Y-%m-%d %H:%M} UTC")
        age_colour = _YELLOW if trust.level is not Freshness.FRESH else ""
        lines.append(f"  {age_colour}{_trust_line(outcome)}{_RESET if age_colour else ''}")
        for warning in warnings:
            lines.append(f"  {_YELLOW}! {warning}{_RESET}")
        lines.append(f"  #{outcome.seq} {outcome.source}")
        return "\n".join(lines) + "\n"

    def notice(self, text: str) -> None:
        """A status line (sync done or failed, a source error), below the current result."""
        if self.ansi:
            self._write(f"  {_YELLOW}* {text}{_RESET}\n")
        else:
            self._write(f"NOTICE: {text}\n")
