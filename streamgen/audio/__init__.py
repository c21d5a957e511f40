"""Audio helpers: mu-law companding (``mulaw``), file I/O (``io``), live output (``live``,
``devices``), spectrograms (``plots``) and a tonality check (``analysis``).

Import the module you need: importing this package loads only mu-law coding, so the data
loader does not pull in the live-playback machinery.
"""

from streamgen.audio.mulaw import mulaw_decode, mulaw_encode

__all__ = ["mulaw_decode", "mulaw_encode"]
