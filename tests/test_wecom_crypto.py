"""WeCom's callback crypto reproduces every published vector in tests/data/wecom."""

from __future__ import annotations

import re

import pytest

from gateway.wecom.crypto import WeComCrypto, WeComCryptoError, signature

from .conftest import DATA

VECTORS = DATA / "wecom" / "crypto-vectors.md"


@pytest.fixture(scope="module")
def vectors() -> str:
    return VECTORS.read_text(encoding="utf-8")


def _after(text: str, label: str, pattern: str) -> str:
    """The first match of ``pattern`` after ``label`` in the vectors file."""
    start = text.index(label)
    match = re.compile(pattern).search(text, start)
    assert match, (label, pattern)
    return match.group(1)


V1 = WeComCrypto("QDG6eK", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "wx5823bf96d3bd56c7")
V2 = WeComCrypto("123456", "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR", "wx49f0ab532d5d035a")


def test_v1a_url_verification(vectors: str) -> None:
    echostr = _after(vectors, "echostr (decoded)", r"= (\S+)")
    assert V1.open("5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3", "1409659589", "263014780",
                   echostr) == "1616140317555161061"


def test_v1b_xml_message(vectors: str) -> None:
    encrypt = _after(vectors, "V1b DecryptMsg", r"Encrypt = (\S+)")
    message = V1.open("477715d11cdb4164915debcba66cb864d751f3e6", "1409659813", "1372623149",
                      encrypt)
    expected = vectors[vectors.index("<xml><ToUserName>"):vectors.index("</xml>") + 6]
    assert message == expected
    assert len(message.encode()) == 284


def test_v1c_json_message(vectors: str) -> None:
    encrypt = _after(vectors, "V1c DecryptMsg", r"encrypt = (\S+)")
    message = V1.open("0623cbc5a8cbee5bcc137c70de99575366fc2af3", "1409659813", "1372623149",
                      encrypt)
    assert message == ('{"ToUserName":"wx5823bf96d3bd56c7","FromUserName":"mycreate",'
                       '"CreateTime": 1409659813,"MsgType":"text","Content":"hello",'
                       '"MsgId":4561255354251345929,"AgentID": 218}')


def test_v2a_signature_and_its_negative(vectors: str) -> None:
    echo = _after(vectors, "V2a check_signature", r"echo_str=(\S+)")
    assert V2.open("dd6b9c95b495b3f7e2901bfbc76c664930ffdb96", "1411443780", "437374425",
                   echo) == "5927782489442352469"
    with pytest.raises(WeComCryptoError) as err:
        V2.open("dd6b9c95b495b3f7e2901bfbc76c664930ffdb96", "1411443780", "437374424", echo)
    assert err.value.code == "bad_signature"


def test_v2b_decrypt(vectors: str) -> None:
    encrypt = _after(vectors, "V2b decrypt_message", r"Encrypt=(\S+)")
    message = V2.open("74d92dfeb87ba7c714f89d98870ae5eb62dff26d", "1411525903", "461056294",
                      encrypt)
    assert "<Content><![CDATA[test]]></Content>" in message
    assert "<FromUserName><![CDATA[messense]]></FromUserName>" in message
    assert "<MsgId>4363689963896700987</MsgId>" in message


# wechatpy's reply plaintext for V2c, as its test file gives it.
V2C_REPLY = """<xml>
<MsgType><![CDATA[text]]></MsgType>
<Content><![CDATA[test]]></Content>
<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>
<ToUserName><![CDATA[messense]]></ToUserName>
<AgentID>1</AgentID>
<CreateTime>1411525903</CreateTime>
</xml>"""


def test_v2c_encrypt_with_a_fixed_prefix(vectors: str) -> None:
    expected = _after(vectors, "V2c encrypt_message", r"expected Encrypt = (\S+)")
    expected_signature = _after(vectors, "V2c encrypt_message", r"MsgSignature = (\w+)")
    encrypt = V2.encrypt(V2C_REPLY, random_prefix=b"1234567890123456")
    assert encrypt == expected
    assert V2.sign("1411525903", "461056294", encrypt) == expected_signature
    assert V2.decrypt(encrypt) == V2C_REPLY


def test_tampering_is_refused() -> None:
    encrypt = V2.encrypt("hello")
    ts, nonce = "1700000000", "42"
    sig = signature("123456", ts, nonce, encrypt)
    assert V2.open(sig, ts, nonce, encrypt) == "hello"
    other_corp = WeComCrypto("123456", "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR", "wwother")
    cases = [
        (lambda: V2.open(sig, ts, "43", encrypt), "bad_signature"),
        (lambda: other_corp.open(sig, ts, nonce, encrypt), "bad_receive_id"),
        (lambda: V2.decrypt("not base64!!"), "bad_ciphertext"),
        (lambda: V2.decrypt("AAAA"), "bad_ciphertext"),
        (lambda: V2.decrypt(encrypt[:-8] + "AAAAAAA="), "bad_ciphertext"),
    ]
    for attempt, code in cases:
        with pytest.raises(WeComCryptoError) as err:
            attempt()
        assert err.value.code == code
