"""Audio helpers: mu-law companding, file I/O, live output."""

from streamgen.audio.mulaw import mulaw_decode, mulaw_encode

__all__ = ["mulaw_encode", "mulaw_decode"]
