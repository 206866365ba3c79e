"""The archive format: a zstd-compressed tar with a JSON manifest beside it.

``codec`` compresses and checks (size, sha256, entry count, content digest); ``manifest`` is the
manifest's schema; ``naming`` the backup ids and REFs; ``catalog`` finds backups in a backend;
``tar/`` reads tar streams (``scanner``: entries, digest, hostile entries; ``exclude``: path
excludes).
"""
