"""Bootstraps a warm worker runs: one per runtime family. They speak frames on stdin/stdout
(a 4-byte big-endian length, then JSON) and send the handler's own output to stderr."""
