"""The Docker side: connecting to a daemon, locked-down helper containers and their image, host FIFOs,
tar streams out of volumes and running containers, staged all-or-nothing writes into a volume,
and per-volume locks.

``host`` connects (unix, tcp+TLS, ssh, contexts); ``helper`` and ``helper_image`` run and build the
helper; ``fifo`` is the host FIFO fast path; ``volume_tar`` and ``container_tar`` read a volume or a
container path as tar; ``http_chunked`` decodes Docker's archive stream; ``staging`` writes into a
volume through a hidden staging directory and an atomic swap; ``locks`` serialises work per volume.
"""
