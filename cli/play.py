"""``streamgen play``: generate and play live on the speakers."""

from __future__ import annotations

import argparse
import sys

from .common import (add_model_options, add_sampling_options, announce_compile, audio_rate, check_output, count,
                     sampling_config, seconds, set_threads)

EXAMPLES = """examples:
  streamgen play --seconds 30
  streamgen play --seconds 0                  # forever (when faster than real time); Ctrl-C stops
  streamgen play --seconds 20 --save heard.wav --temperature 0.9
  streamgen play --list-devices
  streamgen play --device-name pulse --seconds 10
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("play", help="stream generated audio live to the speakers",
                       description="Generate in a producer thread and play through PortAudio. The "
                       "real-time factor is measured first and just enough audio is pre-buffered to "
                       "play the whole duration without glitches.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=seconds(zero="forever"), default=10.0,
                   help="duration, in seconds or with a unit (90, 1.5m); 0 = forever (default: %(default)s)")
    p.add_argument("--device-name", default=None, help="output device: index, name or part of one")
    p.add_argument("--list-devices", action="store_true", help="list output devices and exit")
    p.add_argument("--save", metavar="FILE",
                   help="also record exactly what was played (.wav: 16-bit PCM, like generate)")
    p.add_argument("--force", action="store_true",
                   help="overwrite --save; play forever even when slower than real time")
    p.add_argument("--prebuffer", type=seconds(zero="none"), default=None,
                   help="seconds to buffer (default: planned)")
    p.add_argument("--block", type=count(), default=256,
                   help="samples per produced block (default: %(default)s; the compiled kernel holds "
                   "Python's lock for a block, and the audio callback waits for it)")
    add_model_options(p)
    add_sampling_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from streamgen.audio.devices import list_devices, no_outputs, open_output_device
    from streamgen.audio.live import LivePlayer
    from streamgen.devices import resolve_device
    from streamgen.zoo import load_model

    if args.list_devices:
        devices = list_devices()
        for d in devices:
            mark = "*" if d.is_default else " "
            print(f"{mark} {d.index:>3}  {d.name}  ({d.hostapi}, {d.max_channels} ch, "
                  f"{d.default_samplerate:.0f} Hz)")
        if not devices:
            print(no_outputs())
        return 0
    if args.save:
        check_output(args.save, args.force)
    resolve_device(args.device)  # a torch device that cannot run fails before any work
    set_threads(args)
    model, info = load_model(args.model)
    rate = audio_rate(info, args.model)
    open_output_device(args.device_name, rate)  # no device, or none for this rate: say so now
    from streamgen.generation import AudioGenerator

    gen = AudioGenerator(model, device=args.device, sampling=sampling_config(args, info), seed=args.seed,
                         backend=args.backend, start=args.start or info.start)
    announce_compile(gen.engine.backend)
    player = LivePlayer(lambda n: gen(n)[0], rate, device=args.device_name, block_size=args.block,
                        prebuffer=args.prebuffer, force=args.force)
    report = player.play(args.seconds, save=args.save)
    print(f"played {report.samples_played / rate:.2f} s on '{report.device}' at {rate} Hz "
          f"({gen.engine.backend} backend): "
          f"real-time factor {report.realtime_factor:.2f}, pre-buffer {report.prebuffer_seconds:.2f} s, "
          f"output latency {report.output_latency * 1000:.0f} ms, underflows {report.underflows}"
          f" ({report.device_underflows} flagged by the device, {report.silence_samples} samples of "
          "silence inserted by the player)"
          + (" (interrupted)" if report.interrupted else "")
          + (f"; saved {report.saved}" if report.saved else ""), file=sys.stderr)
    return 130 if report.interrupted else 0
