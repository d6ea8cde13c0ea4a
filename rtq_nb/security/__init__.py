"""Application-level security: signed requests and results, end-to-end encryption.

    keys.py      SigningKey, VerifyKey, Keyring (Ed25519 via cryptography; HMAC-SHA256)
    sealing.py   SealKey, Sealer (AES-256-GCM)
    settings.py  Security: one side's keys, by argument or from RTQ_* environment variables
    requests.py  sign_request (client), RequestGuard (worker: checks before anything else)
    results.py   ResultSigner (worker), ResultCheck (client: verify, open)

What is signed, and how a signature is written, is wire format: :mod:`rtq_nb.protocol.signing`.
"""

from rtq_nb.security.keys import Keyring, SigningKey, VerifyKey
from rtq_nb.security.sealing import Sealer, SealKey
from rtq_nb.security.settings import Security

__all__ = ["Keyring", "SealKey", "Sealer", "Security", "SigningKey", "VerifyKey"]
