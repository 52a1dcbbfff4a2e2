"""The channel a visit came through, read from its referrer URL (for callers that have the referrer but no
channel). Pure string work: no network, no look-ups.

Campaign tags win over the host, since a paid ad on a search engine is an ad: ``utm_medium`` of
cpc/ppc/paid/display/ads -> ad, email/newsletter -> email, social -> social. Then the names in the referring
host: webmail -> email (checked first: webmail lives under search engines' names), search engines -> search,
social networks -> social, any other site -> referral. No referrer at all is a direct visit.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from models.domain import Channel
from models.errors import InvalidInputError

_MEDIUM = {
    "cpc": Channel.AD,
    "ppc": Channel.AD,
    "paid": Channel.AD,
    "paidsearch": Channel.AD,
    "display": Channel.AD,
    "ads": Channel.AD,
    "email": Channel.EMAIL,
    "newsletter": Channel.EMAIL,
    "social": Channel.SOCIAL,
}
# second-level names (the label left of the public suffix is enough to tell them apart)
_SEARCH = frozenset(
    {"google", "bing", "duckduckgo", "yahoo", "baidu", "yandex", "ecosia", "qwant", "startpage"}
)
_SOCIAL = frozenset(
    {"facebook", "instagram", "twitter", "x", "t", "linkedin", "pinterest", "tiktok", "reddit", "youtube"}
)
_WEBMAIL = frozenset({"mail", "outlook", "gmail", "webmail"})


def channel_from_referrer(referrer: str) -> Channel:
    """The channel of a visit whose referrer is ``referrer`` (a URL or a bare host; "" for none).

    Raises InvalidInputError naming the referrer when it cannot be parsed as a URL (e.g. an unclosed IPv6
    bracket, which urllib.parse refuses with ValueError)."""
    text = referrer.strip()
    if not text:
        return Channel.DIRECT
    try:
        parts = urlsplit(text if "//" in text else "//" + text)
        mediums = parse_qs(parts.query).get("utm_medium", [])
        host = parts.hostname or ""
    except ValueError as e:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise InvalidInputError(f"referrer {shown!r} is not a valid URL: {e}") from None
    for medium in mediums:
        channel = _MEDIUM.get(medium.strip().lower())
        if channel is not None:
            return channel
    labels = host.lower().removeprefix("www.").split(".")
    names = set(labels[:-1]) if len(labels) > 1 else set(labels)  # "" for no host: no known name
    # webmail first: mail.google.com and mail.yahoo.com are under a search engine's name
    for known, channel in ((_WEBMAIL, Channel.EMAIL), (_SEARCH, Channel.SEARCH), (_SOCIAL, Channel.SOCIAL)):
        if names & known:
            return channel
    return Channel.REFERRAL
