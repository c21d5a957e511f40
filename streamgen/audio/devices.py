"""Output-device discovery through PortAudio (``sounddevice``), with one-line, actionable errors."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

COMMON_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)


class AudioDeviceError(RuntimeError):
    """No usable audio output; the message is one line and says how to fix it."""


@dataclass(frozen=True)
class OutputDevice:
    """A PortAudio device that can play audio."""

    index: int
    name: str
    hostapi: str
    max_channels: int
    default_samplerate: float
    is_default: bool


def sounddevice() -> ModuleType:
    """Import ``sounddevice``; a missing module or PortAudio library raises AudioDeviceError."""
    try:
        import sounddevice as sd
    except ImportError as exc:
        raise AudioDeviceError(
            f'live playback needs the sounddevice package ({exc}): pip install "streamgen[live]"'
        ) from exc
    except OSError as exc:  # sounddevice raises OSError when libportaudio is absent
        raise AudioDeviceError(
            f"PortAudio library not found ({exc}): install it, e.g. `apt-get install libportaudio2`"
        ) from exc
    return sd


def list_devices() -> list[OutputDevice]:
    """All devices PortAudio can play to, in PortAudio's index order."""
    sd = sounddevice()
    hostapis = sd.query_hostapis()
    default = _default_output_index(sd)
    return [
        OutputDevice(
            index=int(d["index"]),
            name=str(d["name"]),
            hostapi=str(hostapis[d["hostapi"]]["name"]),
            max_channels=int(d["max_output_channels"]),
            default_samplerate=float(d["default_samplerate"]),
            is_default=int(d["index"]) == default,
        )
        for d in sd.query_devices()
        if d["max_output_channels"] > 0
    ]


def open_output_device(device: int | str | None, samplerate: int) -> tuple[OutputDevice, int]:
    """Pick an output device (index, name or substring, None = default) that plays ``samplerate``.

    Returns the device and the channel count to open it with (1, or its channel count when it
    cannot play mono; the caller then duplicates the mono signal). Raises AudioDeviceError.
    """
    sd = sounddevice()
    outputs = list_devices()
    if not outputs:
        raise AudioDeviceError(f"no audio output device found: {no_outputs(sd)}")
    chosen = _select(outputs, device)
    for channels in dict.fromkeys((1, chosen.max_channels)):
        if _accepts(sd, chosen.index, channels, samplerate):
            return chosen, channels
    rates = [r for r in COMMON_RATES if _accepts(sd, chosen.index, chosen.max_channels, r)]
    accepted = ", ".join(map(str, rates)) + " Hz" if rates else "none of the common rates"
    raise AudioDeviceError(
        f"output device {chosen.name!r} does not play {samplerate} Hz (it accepts: {accepted}); "
        "resample the audio to an accepted rate or choose another device with --device-name "
        "(see streamgen play --list-devices)"
    )


def no_outputs(sd: ModuleType | None = None) -> str:
    """Why PortAudio lists no output (the library itself is installed) and what to do."""
    apis = ", ".join(h["name"] for h in (sd or sounddevice()).query_hostapis()) or "none"
    return (f"PortAudio (host APIs: {apis}) lists no output device; make a sound card or sound "
            "server (ALSA, PulseAudio, JACK) reachable, or write a file with streamgen generate")


def _default_output_index(sd: ModuleType) -> int:
    try:
        return int(sd.query_devices(kind="output")["index"])
    except (sd.PortAudioError, ValueError):
        return -1


def _select(outputs: list[OutputDevice], device: int | str | None) -> OutputDevice:
    names = ", ".join(f"{d.index}: {d.name}" for d in outputs)
    if device is None:
        return next((d for d in outputs if d.is_default), outputs[0])
    if isinstance(device, str) and device.isdigit():
        device = int(device)
    if isinstance(device, int):
        found = [d for d in outputs if d.index == device]
    else:
        found = [d for d in outputs if d.name == device] or [
            d for d in outputs if device.lower() in d.name.lower()
        ]
    if len(found) == 1:
        return found[0]
    problem = "matches several output devices" if found else "is not an output device"
    raise AudioDeviceError(f"device {device!r} {problem}; choose one of: {names} (--device-name)")


def _accepts(sd: ModuleType, index: int, channels: int, samplerate: int) -> bool:
    try:
        sd.check_output_settings(
            device=index, channels=channels, dtype="float32", samplerate=samplerate
        )
    except sd.PortAudioError:
        return False
    return True
