"""The configuration file: its schema, declared once and used for validation (``schema``), and
where backups go for a named backend, a path or a URL (``locations``)."""
