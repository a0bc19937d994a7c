"""The operator's display: the answer at a glance, in Chinese and English.

On a terminal (ANSI) the screen is cleared for each result and shows a large
block-letter VALID (green) or INVALID (red), which kind of code was shown (a
phone's live code, or a printed/static code), "check the holder's identity
document" when the terminal's policy asks for it, the reason in plain words in
both languages, the province, and the trust-data age; warnings (aging or stale
trust data, clock behind, a failed sync, an audit log that cannot be
written, a scanner that went away) follow in yellow. On anything else (a
log file, a pipe) each result is one plain line. Before the first scan,
:meth:`Display.ready` shows which inputs are read and how old the trust data is.

Everything here is read by a person: in Chinese and English (a refusal's
English ``detail`` with its Chinese from :func:`detail_zh`), and every time in
Beijing time (:func:`shellkit.times.beijing`; a UTC time inside a message, e.g.
from a failed sync, is rewritten by :func:`beijing_times`). The JSON lines and
the audit log keep UTC and the English detail.
"""

from __future__ import annotations

import datetime as _dt
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from healthcode import PROVINCES, Reason
from healthcode.model import PROVINCES_EN, province_label
from shellkit.times import beijing

from .trust import Freshness, TrustAssessment, format_age, format_age_zh
from .verdict import DYNAMIC, STATIC, TerminalReason

if TYPE_CHECKING:  # pragma: no cover
    from .outcome import Outcome

__all__ = ["REASON_TEXT", "KIND_TEXT", "CHECK_ID_TEXT", "Display", "banner", "describe", "detail_zh",
           "beijing_times"]

#: The reason in plain words: (Chinese, English).
REASON_TEXT: dict[Reason | TerminalReason | None, tuple[str, str]] = {
    None: ("健康码有效", "The health code is valid"),
    Reason.MALFORMED: ("不是有效的健康码（无法识别或扫描不完整）",
                       "Not a readable health code (damaged, partial or another kind of code)"),
    Reason.UNSUPPORTED_VERSION: ("健康码版本不受支持，请更新核验软件",
                                 "Code version not supported: update the verifier"),
    Reason.UNKNOWN_KEY: ("签发机构不在信任列表中", "Issuer not trusted (unknown signing key)"),
    Reason.ALGORITHM_MISMATCH: ("签名算法不符，疑似伪造", "Signature algorithm mismatch: possibly forged"),
    Reason.BAD_SIGNATURE: ("签名无效，疑似伪造或被篡改", "Invalid signature: forged or altered"),
    Reason.NOT_YET_VALID: ("健康码尚未生效（请检查本机时间）", "Code not yet valid (check this terminal's clock)"),
    Reason.EXPIRED: ("健康码已过期，请重新申领", "Code expired: the holder needs a new one"),
    Reason.KEY_NOT_VALID_AT_ISSUANCE: ("签发时密钥不在有效期内", "Signed outside the key's validity period"),
    Reason.KEY_COMPROMISED: ("签发密钥已泄露，健康码作废", "Signing key compromised: code not accepted"),
    Reason.REVOKED: ("健康码已被撤销", "Code has been revoked"),
    Reason.TRUST_DATA_STALE: ("信任数据过旧，请联网同步后再核验", "Trust data too old: sync before verifying"),
    Reason.PRESENTATION_REQUIRED: ("此码须在持码人手机上动态出示，截图或复印无效",
                                   "This code must be shown live on the holder's phone: a copy is not valid"),
    Reason.NO_HOLDER_KEY: ("动态码未绑定手机密钥，无效", "Live code not bound to a phone key: not valid"),
    Reason.STALE_PRESENTATION: ("动态码已过时（可能是截图），请持码人重新出示",
                                "Live code too old (a screenshot?): ask for it again"),
    Reason.FUTURE_PRESENTATION: ("动态码时间超前，请检查手机与本机时间",
                                 "Live code from the future: check the phone's and this terminal's clocks"),
    Reason.BAD_DEVICE_SIGNATURE: ("动态码签名与绑定手机不符，疑似伪造",
                                  "Live code not signed by the bound phone: possibly forged"),
    Reason.REPLAYED: ("此动态码已扫描过，请持码人重新出示",
                      "This live code was already scanned: ask the holder to show it again"),
    TerminalReason.STATIC_CODE_REFUSED: ("本终端不接受静态码，请出示手机上的动态码",
                                         "Static codes are not accepted here: ask for the live code on the phone"),
}

#: Which kind of code was shown, always on the display: (Chinese, English).
KIND_TEXT = {DYNAMIC: ("动态码", "live code (phone)"), STATIC: ("静态码", "printed/static code")}
#: The terminal's ``check-id`` policy, on a valid static code.
CHECK_ID_TEXT = ("请核验身份证件", "check the holder's identity document")


_FONT = {
    "V": ["█   █", "█   █", "█   █", " █ █ ", "  █  "],
    "A": [" ███ ", "█   █", "█████", "█   █", "█   █"],
    "L": ["█    ", "█    ", "█    ", "█    ", "█████"],
    "I": ["█████", "  █  ", "  █  ", "  █  ", "█████"],
    "D": ["████ ", "█   █", "█   █", "█   █", "████ "],
    "N": ["█   █", "██  █", "█ █ █", "█  ██", "█   █"],
    "R": ["████ ", "█   █", "████ ", "█  █ ", "█   █"],
    "E": ["█████", "█    ", "████ ", "█    ", "█████"],
    "Y": ["█   █", " █ █ ", "  █  ", "  █  ", "  █  "],
}

#: A refusal's English detail (the core's, the framing's, the image decoder's) -> its Chinese.
#: First match wins; ``{0}``... are the pattern's groups. Unknown details get their reason's Chinese.
_DETAIL_ZH: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), zh) for p, zh in (
    (r"^input line too long \(over (\d+) bytes\)", "输入过长（超过 {0} 字节），已丢弃"),
    (r"^input contains NUL bytes", "输入含空字节：二进制数据，不是健康码"),
    (r"^input is not valid UTF-8", "输入不是有效文本：二进制数据，不是健康码"),
    (r"^two codes run together", "两个码连在一起：请一次只扫一个码"),
    (r"^code typed in lower case", "码被输入成小写：请检查扫码枪的键盘布局或大写锁定"),
    (r"^an EU Digital COVID Certificate", "欧盟数字新冠证书（HC1:），不是中国健康码"),
    (r"^a SMART Health Card", "SMART Health Card（shc:/），不是中国健康码"),
    (r"^a web link", "网址链接，不是健康码"),
    (r"^partial scan", "扫描不完整：内容太短，不是完整的健康码"),
    (r"^image unreadable", "图像无法读取"),
    (r"^no QR code found", "图像中未找到二维码"),
    (r"^more than (\d+) QR codes", "一张图像中超过 {0} 个二维码"),
    (r"^not a health code \(prefix", "不是健康码（缺少 EHC1: 前缀）"),
    (r"^code format version", "健康码格式版本不受支持"),
    (r"^no trusted key of province (\d\d) with kid ([0-9a-f]+)", "省份 {0} 没有编号为 {1} 的受信任密钥"),
    (r"^header alg", "签名算法与密钥不符"),
    (r"^signature does not verify", "签名验证失败"),
    (r"^signing key ([0-9a-f]+) of province (\d\d) is compromised", "省份 {1} 的签发密钥 {0} 已泄露"),
    (r"^presentation is (\d+) s old", "动态码已生成 {0} 秒，超过有效时间"),
    (r"^presentation is from the future", "动态码时间超前：请检查手机与本机时间"),
    (r"^device signature does not verify", "动态码签名与绑定的手机密钥不符"),
    (r"^this live code was already scanned", "此动态码已扫描过"),
    (r"^code is bound to a phone", "此码绑定手机：请扫描手机上的动态码，而非副本"),
    (r"^static codes are not accepted at this terminal", "本终端不接受静态码：请持码人出示手机上的动态码"),
    (r"^code issued outside its key's use window", "签发时间不在密钥的使用期内"),
    (r"^code issued in the future", "签发时间晚于本机时间"),
    (r"^code has expired", "健康码已过期"),
    (r"^signing key's verification window has ended", "签发密钥的核验期已结束"),
    (r"^code has been revoked", "健康码已被撤销"),
    (r"^no verified trust data", "无已验证的信任数据：请同步"),
    (r"^trust data is .* old; the limit is", "信任数据过旧，超过使用期限"),
))
_MALFORMED_ZH = "内容无法解析（码已损坏或扫描不完整）"

#: An ISO 8601 UTC time inside a message (``2026-11-22T08:00:00Z``, with optional fraction).
_UTC_TIME = re.compile(r"\b(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(?:Z|\+00:00)")


def detail_zh(reason: Reason | TerminalReason | None, detail: str) -> str:
    """The Chinese of a refusal's English ``detail`` (the reason's own words when unknown)."""
    for pattern, zh in _DETAIL_ZH:
        match = pattern.match(detail)
        if match:
            return zh.format(*match.groups())
    if reason is None or reason is Reason.MALFORMED:
        return _MALFORMED_ZH
    return REASON_TEXT.get(reason, REASON_TEXT[Reason.MALFORMED])[0]


def beijing_times(text: str) -> str:
    """``text`` with every ISO 8601 UTC time in it shown in Beijing time (for people)."""
    if "T" not in text:
        return text
    return _UTC_TIME.sub(
        lambda m: beijing(_dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=_dt.timezone.utc), seconds=True),
        text)

_GREEN, _RED, _YELLOW, _BOLD, _RESET = "\x1b[1;32m", "\x1b[1;31m", "\x1b[1;33m", "\x1b[1m", "\x1b[0m"
_CLEAR = "\x1b[2J\x1b[H"


def banner(word: str) -> list[str]:
    """``word`` in 5-row block letters."""
    return ["  ".join(_FONT[ch][row] for ch in word) for row in range(5)]


def _kind(outcome: "Outcome") -> str | None:
    """Which kind of code was shown, in both languages, with a live code's time (Beijing)."""
    if outcome.kind is None:
        return None
    zh, en = KIND_TEXT[outcome.kind]
    text = f"{zh} {en}"
    if outcome.step is not None:
        made = _dt.datetime.fromtimestamp(outcome.step * 30, _dt.timezone.utc)
        text += f"，生成于 / made at {beijing(made, seconds=True)}"
    return text


def describe(outcome: "Outcome") -> tuple[str, str]:
    """The reason in plain words (zh, en), with the specific detail for malformed input."""
    zh, en = REASON_TEXT.get(outcome.reason, REASON_TEXT[Reason.MALFORMED])
    return zh, en


def _province(outcome: "Outcome") -> str | None:
    code = outcome.code
    if code is not None:  # verified (valid, or refused by this terminal after verifying it)
        return province_label(code.province)
    if outcome.claimed is not None:
        p = outcome.claimed[0]
        return f"{PROVINCES[p]} {PROVINCES_EN[p]} ({p}, 未验证 unverified)"
    return None


def _trust_line(outcome: "Outcome") -> str:
    trust = outcome.trust
    if trust.age is None:
        return "信任数据: 无 / trust data: none"
    return f"信任数据 {format_age_zh(trust.age)} 前更新 / trust data {format_age(trust.age)} old"


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
        valid = outcome.valid
        word = "VALID" if valid else "INVALID"
        zh, en = describe(outcome)
        kind = _kind(outcome)
        province = _province(outcome)
        trust = outcome.trust
        check_id = "{} / {}".format(*CHECK_ID_TEXT) if valid and outcome.check_id else None
        if not self.ansi:
            parts = [f"#{outcome.seq} {word}"]
            if check_id:
                parts.append(f"CHECK ID {check_id}")
            parts.append(f"{zh} / {en}")
            if kind:
                parts.append(kind)
            if not valid and outcome.detail:
                parts.append(f"{detail_zh(outcome.reason, outcome.detail)} / {outcome.detail}")
            if province:
                parts.append(province)
            parts.append(_trust_line(outcome))
            parts += [f"WARNING 警告: {beijing_times(w)}" for w in warnings]
            return " | ".join(parts) + "\n"
        colour = _GREEN if valid else _RED
        lines = [_CLEAR]
        lines += [f"{colour}  {row}{_RESET}" for row in banner(word)]
        lines.append("")
        if check_id:
            lines.append(f"{_YELLOW}  >>> {check_id} <<<{_RESET}")
        if kind:
            lines.append(f"{_BOLD}  {kind}{_RESET}")
        lines.append(f"{_BOLD}  {'有效' if valid else '无效'}：{zh}{_RESET}")
        lines.append(f"{_BOLD}  {word}: {en}{_RESET}")
        if not valid and outcome.detail:
            lines.append(f"  （{detail_zh(outcome.reason, outcome.detail)} / {outcome.detail}）")
        if province:
            lines.append(f"  省份 / province: {province}")
        if valid and outcome.code is not None:  # a valid outcome always has its code
            lines.append(f"  有效期至 / valid until: {beijing(outcome.code.expires_at)}")
        age_colour = _YELLOW if trust.level is not Freshness.FRESH else ""
        lines.append(f"  {age_colour}{_trust_line(outcome)}{_RESET if age_colour else ''}")
        for warning in warnings:
            lines.append(f"  {_YELLOW}! {beijing_times(warning)}{_RESET}")
        lines.append(f"  #{outcome.seq} {outcome.source}")
        return "\n".join(lines) + "\n"

    def ready(self, inputs: Sequence[str], trust: TrustAssessment, warnings: Sequence[str], *,
              output: str | None = None) -> None:
        """The screen before the first scan: the inputs read, the trust data's age, "ready / 就绪"."""
        self._write(self.render_ready(inputs, trust, warnings, output=output))

    def render_ready(self, inputs: Sequence[str], trust: TrustAssessment, warnings: Sequence[str], *,
                     output: str | None = None) -> str:
        age = trust.age
        if trust.last_verified is None or age is None:  # (assess gives both or neither)
            data = "信任数据: 无，需要同步 / trust data: none, sync needed"
        else:
            data = (f"信任数据 {format_age_zh(age)} 前更新（{beijing(trust.last_verified)} 验证）/ "
                    f"trust data {format_age(age)} old (verified {beijing(trust.last_verified)})")
        refusing = trust.level in (Freshness.STALE, Freshness.MISSING)
        state = ("未就绪：拒绝核验直至同步 / not ready: codes refused until a sync" if refusing
                 else "就绪，请扫码 / ready: scan a code")
        where = ", ".join(inputs) or "无 / none"
        shown = [beijing_times(w) for w in warnings]
        if not self.ansi:
            parts = ["READY 就绪 / ready" if not refusing else "NOT READY 未就绪 / not ready",
                     f"扫描输入 / scanner input: {where}", data]
            if output is not None:
                parts.append(f"结果输出 / results to: {output}")
            parts += [f"WARNING 警告: {w}" for w in shown]
            return " | ".join(parts) + "\n"
        colour = _YELLOW if refusing else _GREEN
        lines = [_CLEAR]
        lines += [f"{colour}  {row}{_RESET}" for row in banner("READY")]
        lines.append("")
        lines.append(f"{_BOLD}  {state}{_RESET}")
        lines.append(f"  扫描输入 / scanner input: {where}")
        age_colour = _YELLOW if trust.level is not Freshness.FRESH else ""
        lines.append(f"  {age_colour}{data}{_RESET if age_colour else ''}")
        if output is not None:
            lines.append(f"  结果输出 / results to: {output}")
        lines += [f"  {_YELLOW}! {w}{_RESET}" for w in shown]
        return "\n".join(lines) + "\n"

    def notice(self, text: str) -> None:
        """A status line (sync done or failed, a source error), below the current result."""
        text = beijing_times(text)
        if self.ansi:
            self._write(f"  {_YELLOW}* {text}{_RESET}\n")
        else:
            self._write(f"NOTICE 提示: {text}\n")
