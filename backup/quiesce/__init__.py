"""Quiescing: holding applications still while their volumes are read or written, and putting them back.

Callers (backup, restore, migrate, jobs) use one object: ``session.QuiesceSession``, one per run,
over all the run's volumes. It owns its parts, which no caller touches: ``plan`` decides which
containers stop or pause and in what order (pure); ``containers`` lists them and carries the plan
out; ``hooks`` runs the exec hooks from container labels or a job; ``recovery`` is the crash record
written before anything goes down, and the resume after a killed run.
"""
