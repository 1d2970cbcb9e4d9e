"""WeCom's callback crypto: msg_signature and the AES-256-CBC envelope.

The scheme (WeCom doc 加解密方案):
- ``msg_signature`` = sha1 hex of the concatenation of sorted([token, timestamp, nonce, encrypt]);
- key = base64(EncodingAESKey + "="), 32 bytes; IV = the key's first 16 bytes;
- plaintext = 16 random bytes + 4-byte big-endian length + msg + receive id, PKCS#7-padded
  to a 32-byte block (not AES's 16), then base64.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["WeComCrypto", "WeComCryptoError", "signature"]

_BLOCK = 32


class WeComCryptoError(Exception):
    """A callback failed verification; ``code`` says which check."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypt])).encode()).hexdigest()


class WeComCrypto:
    def __init__(self, token: str, encoding_aes_key: str, receive_id: str) -> None:
        if len(encoding_aes_key) != 43:
            raise ValueError("EncodingAESKey must be 43 characters")
        try:
            self._key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except binascii.Error:
            raise ValueError("EncodingAESKey is not valid base64") from None
        self._token = token
        self.receive_id = receive_id

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))

    def verify(self, msg_signature: str, timestamp: str, nonce: str, encrypt: str) -> None:
        expected = signature(self._token, timestamp, nonce, encrypt)
        # compare_digest refuses a non-ASCII str (TypeError): such a signature is simply wrong.
        if not (msg_signature.isascii()
                and hmac.compare_digest(expected, msg_signature.lower())):
            raise WeComCryptoError("bad_signature", "msg_signature does not match")

    def decrypt(self, encrypt: str) -> str:
        """The message inside ``encrypt``; its receive id must be ours."""
        try:
            data = base64.b64decode(encrypt, validate=True)
        except binascii.Error:
            raise WeComCryptoError("bad_ciphertext", "Encrypt is not base64") from None
        if not data or len(data) % 16:
            raise WeComCryptoError("bad_ciphertext", "Encrypt is not whole AES blocks")
        decryptor = self._cipher().decryptor()
        plain = decryptor.update(data) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= _BLOCK or plain[-pad:] != bytes([pad]) * pad:
            raise WeComCryptoError("bad_ciphertext", "bad padding")
        plain = plain[:-pad]
        if len(plain) < 20:
            raise WeComCryptoError("bad_ciphertext", "too short")
        (length,) = struct.unpack(">I", plain[16:20])
        if 20 + length > len(plain):
            raise WeComCryptoError("bad_ciphertext", "length exceeds the message")
        message, receive_id = plain[20 : 20 + length], plain[20 + length :]
        if not hmac.compare_digest(receive_id, self.receive_id.encode()):
            raise WeComCryptoError("bad_receive_id", "the message is for another receive id")
        try:
            return message.decode("utf-8")
        except UnicodeDecodeError:
            raise WeComCryptoError("bad_ciphertext", "message is not UTF-8") from None

    def encrypt(self, message: str, random_prefix: bytes | None = None) -> str:
        prefix = os.urandom(16) if random_prefix is None else random_prefix
        if len(prefix) != 16:
            raise ValueError("the random prefix is 16 bytes")
        body = message.encode("utf-8")
        plain = prefix + struct.pack(">I", len(body)) + body + self.receive_id.encode()
        pad = _BLOCK - len(plain) % _BLOCK
        plain += bytes([pad]) * pad
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()

    def sign(self, timestamp: str, nonce: str, encrypt: str) -> str:
        return signature(self._token, timestamp, nonce, encrypt)

    def open(self, msg_signature: str, timestamp: str, nonce: str, encrypt: str) -> str:
        """Verify then decrypt: what the callback endpoint does with every request."""
        self.verify(msg_signature, timestamp, nonce, encrypt)
        return self.decrypt(encrypt)
