"""Encryption in the age format: recipients and identities through pyrage (``encryption``), and the
passphrase (scrypt) format in pure Python (``age_scrypt``)."""
