"""Audio helpers: mu-law companding, file I/O, live output."""

from streamgen.audio.devices import AudioDeviceError, OutputDevice, list_devices
from streamgen.audio.live import LivePlayer, PlaybackReport, TooSlowError
from streamgen.audio.mulaw import mulaw_decode, mulaw_encode

__all__ = [
    "AudioDeviceError",
    "LivePlayer",
    "OutputDevice",
    "PlaybackReport",
    "TooSlowError",
    "list_devices",
    "mulaw_decode",
    "mulaw_encode",
]
