"""Known answers for the channel read from a referrer URL."""

from __future__ import annotations

import pytest

from models.domain import Channel
from models.errors import InvalidInputError
from models.referrer import channel_from_referrer


@pytest.mark.parametrize(
    ("referrer", "channel"),
    [
        ("", Channel.DIRECT),
        ("   ", Channel.DIRECT),
        ("https://www.google.com/search?q=kettle", Channel.SEARCH),
        ("https://www.google.co.uk/", Channel.SEARCH),
        ("bing.com", Channel.SEARCH),
        ("https://duckduckgo.com/?q=tea", Channel.SEARCH),
        ("https://l.facebook.com/l.php?u=x", Channel.SOCIAL),
        ("https://t.co/abc", Channel.SOCIAL),
        ("https://x.com/someone/status/1", Channel.SOCIAL),
        ("https://www.pinterest.co.uk/pin/1", Channel.SOCIAL),
        ("https://mail.google.com/mail/u/0/", Channel.EMAIL),
        ("https://outlook.live.com/mail/", Channel.EMAIL),
        ("https://login.mail.yahoo.com/", Channel.EMAIL),  # webmail under a search engine, not first label
        ("https://www.google.com/aclk?sa=l&utm_medium=cpc", Channel.AD),
        ("https://news.example.org/?utm_source=nl&utm_medium=Newsletter", Channel.EMAIL),
        ("https://blog.example.com/best-kettles", Channel.REFERRAL),
        ("https://www.xbox.com/", Channel.REFERRAL),  # "x" only as its own label
        ("not a url at all", Channel.REFERRAL),
    ],
)
def test_channel_from_referrer(referrer: str, channel: Channel) -> None:
    assert channel_from_referrer(referrer) is channel


@pytest.mark.parametrize(
    "referrer",
    [
        "http://[::1",  # unclosed IPv6 bracket
        "http://a]b/",  # a closing bracket without an opening one
        "http://[zz]/",  # brackets around something that is not an address
        "http://ex\u2100ample.com/",  # a host that NFKC normalisation turns into a path separator
        "[::1",  # bare host, no scheme
    ],
)
def test_a_malformed_referrer_is_a_validation_error_naming_it(referrer: str) -> None:
    with pytest.raises(InvalidInputError, match=r"^referrer '.*' is not a valid URL: "):
        channel_from_referrer(referrer)
