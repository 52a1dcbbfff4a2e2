"""The channel a visit came through, read from its referrer URL (for callers that have the referrer but no
channel). Pure string work: no network, no look-ups.

Campaign tags win over the host, since a paid ad on a search engine is an ad: ``utm_medium`` of
cpc/ppc/paid/display/ads -> ad, email/newsletter -> email, social -> social. Then the referring host: search
engines -> search, social networks -> social, webmail -> email, any other site -> referral. No referrer at
all is a direct visit.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from models.domain import Channel

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
    """The channel of a visit whose referrer is ``referrer`` (a URL or a bare host; "" for none)."""
    text = referrer.strip()
    if not text:
        return Channel.DIRECT
    parts = urlsplit(text if "//" in text else "//" + text)
    for medium in parse_qs(parts.query).get("utm_medium", []):
        channel = _MEDIUM.get(medium.strip().lower())
        if channel is not None:
            return channel
    labels = (parts.hostname or "").lower().removeprefix("www.").split(".")
    if not labels or labels == [""]:
        return Channel.REFERRAL
    if labels[0] in _WEBMAIL:  # mail.google.com, mail.yahoo.com: webmail before the search engine
        return Channel.EMAIL
    names = set(labels[:-1]) if len(labels) > 1 else set(labels)
    if names & _SEARCH:
        return Channel.SEARCH
    if names & _SOCIAL:
        return Channel.SOCIAL
    if names & _WEBMAIL:
        return Channel.EMAIL
    return Channel.REFERRAL
