"""WeCom's callback crypto reproduces every published vector in tests/data/wecom."""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

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


# Envelopes built here from WeCom's scheme (not by WeComCrypto.encrypt): AES-256-CBC under
# base64(EncodingAESKey + "="), IV its first 16 bytes, a 32-byte PKCS#7 block.
V2_KEY = base64.b64decode("kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR=")


def _sealed(plain: bytes) -> str:
    assert len(plain) % 16 == 0
    encryptor = Cipher(algorithms.AES(V2_KEY), modes.CBC(V2_KEY[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


def _padded(plain: bytes) -> bytes:
    pad = 32 - len(plain) % 32
    return plain + bytes([pad]) * pad


def _inner(message: bytes, receive_id: bytes = b"wx49f0ab532d5d035a",
           length: int | None = None) -> bytes:
    size = len(message) if length is None else length
    return b"r" * 16 + struct.pack(">I", size) + message + receive_id


def test_a_message_that_fills_whole_blocks_carries_a_full_block_of_padding() -> None:
    message = b"m" * (64 - 20 - len(b"wx49f0ab532d5d035a"))  # inner text exactly 64 bytes
    encrypt = _sealed(_padded(_inner(message)))
    assert len(base64.b64decode(encrypt)) == 96  # padding of 32: a whole extra block
    assert V2.decrypt(encrypt) == message.decode()


@pytest.mark.parametrize(("plain", "code"), [
    # (_inner(b"hi") is 40 bytes: 24 more make two AES blocks of 32)
    (_inner(b"hi") + b"\x00" * 24, "bad_ciphertext"),                   # padding byte 0
    (_inner(b"hi") + b"\x21" * 24, "bad_ciphertext"),                   # 33 > the block
    (_inner(b"hi") + b"\x05" * 23 + b"\x18", "bad_ciphertext"),         # bytes disagree
    (_padded(_inner(b"hi", length=2**31)), "bad_ciphertext"),           # length past the end
    (_padded(_inner(b"hi", length=2**32 - 1)), "bad_ciphertext"),
    (_padded(_inner(b"", receive_id=b"")), "bad_receive_id"),           # 20 bytes, no id
    (_padded(_inner(b"\xff\xfe")), "bad_ciphertext"),                   # not UTF-8
    # Padded well, but 16 bytes are left: no room for the length, let alone a message.
    (b"r" * 16 + bytes([16]) * 16, "bad_ciphertext"),
], ids=["pad0", "pad33", "pad_mixed", "len_2_31", "len_max", "no_receive_id", "not_utf8",
        "too_short"])
def test_a_malformed_envelope_is_refused_with_its_code(plain: bytes, code: str) -> None:
    """Each refusal has the code the callback answers with and a message for the log."""
    with pytest.raises(WeComCryptoError) as err:
        V2.decrypt(_sealed(plain))
    assert err.value.code == code
    assert str(err.value)


def test_each_refusal_says_which_check_failed() -> None:
    """The callback answers a refusal with its code and this message (an operator reading
    the 403 learns what was wrong): each names its check, whatever the exact words."""
    encrypt = V2.encrypt("hello")
    ts, nonce = "1700000000", "42"
    cases: list[tuple[Callable[[], str], str]] = [
        (lambda: V2.open("0" * 40, ts, nonce, encrypt), "msg_signature"),
        (lambda: V2.decrypt("not base64!!"), "base64"),
        (lambda: V2.decrypt("AAAA"), "blocks"),
        (lambda: V2.decrypt(_sealed(_inner(b"hi") + b"\x00" * 24)), "padding"),
        (lambda: V2.decrypt(_sealed(b"r" * 16 + bytes([16]) * 16)), "short"),
        (lambda: V2.decrypt(_sealed(_padded(_inner(b"hi", length=2**31)))), "length"),
        (lambda: V2.decrypt(_sealed(_padded(_inner(b"hi", receive_id=b"wwother")))),
         "receive id"),
        (lambda: V2.decrypt(_sealed(_padded(_inner(b"\xff\xfe")))), "utf-8"),
    ]
    for attempt, words in cases:
        with pytest.raises(WeComCryptoError) as err:
            attempt()
        assert words in str(err.value).lower(), (words, str(err.value))


def test_encrypt_is_strict_base64_even_when_signed() -> None:
    """A character outside base64's alphabet is refused, not skipped: WeCom sends plain
    base64, and a lenient decoder would open a text other than the one that was signed."""
    encrypt = V2.encrypt("hello")
    for junk in ("*", " ", "\n", "."):
        tampered = encrypt[:8] + junk + encrypt[8:]
        sig = V2.sign("1700000000", "42", tampered)
        with pytest.raises(WeComCryptoError) as err:
            V2.open(sig, "1700000000", "42", tampered)
        assert err.value.code == "bad_ciphertext"


@pytest.mark.parametrize("key", [
    "A" * 42, "A" * 44,       # not 43 characters
    "A" * 39 + "....",        # 43, but not base64 (a lenient decoder makes a 29-byte key)
    "A" * 42 + "*",
])
def test_an_encoding_aes_key_off_its_format_is_refused_at_once(key: str) -> None:
    with pytest.raises(ValueError):
        WeComCrypto("123456", key, "wx49f0ab532d5d035a")
