"""Quiescing: making a volume consistent while it is read, and putting its applications back.

``plan`` decides which containers stop or pause and in what order (pure); ``containers`` carries it
out; ``hooks`` runs the exec hooks from container labels; ``session`` wraps one backup in hooks and
quiescing on every path; ``recovery`` is the crash record and the resume after a killed run.
"""
