"""The gate before archiving: does the joined file keep its fragments' promises?"""

from __future__ import annotations

from collections import Counter

from recorder.errors import StitchError
from recorder.stitch._ffmpeg import Deadline, last_messages
from recorder.stitch._join import OUTPUTS
from recorder.stitch._plan import WINDOW, StitchResult, verification_windows
from recorder.stitch._playlist import playlist_duration
from recorder.stitch._probe import Scan, Windows, inspect, stamp


class VerificationError(StitchError):
    """The joined file is not what its fragments promise; it must not be archived as is."""


def verify(
    result: StitchResult,
    expected_duration: float,
    *,
    tolerance: float = 0.5,
    ratio: float = 0.001,
    max_drift: float = 0.1,
    timeout: float = 300,
) -> None:
    """VerificationError unless the output is what its fragments promise.

    (a) It lasts ``expected_duration`` within ``tolerance + ratio * expected_duration``. Then,
    from the packets of its first seconds and of a window around each join: (b) each stream's
    timestamps only go forward; (c) at each join the audio's timestamps keep pace with its
    samples within ``max_drift`` (a gap or an overlap there is how far a player, which plays
    samples back to back, puts the audio off its video); and (d) its first seconds and those
    after each join decode without error. A playlist is checked for (a) only, from its own
    segment durations.
    """
    playlist = result.path.suffix == ".m3u8"
    start = result.probe.start_time
    windows = verification_windows(result.joins, start)
    fmt = OUTPUTS.get(result.path.suffix[1:])
    try:
        read = None if playlist else _made(result, windows)
        if read is None and not playlist:
            read = inspect(result.path, fmt, Deadline.after(timeout), windows=windows)[1].scan
        duration = read.duration if read else playlist_duration(result.path)
    except StitchError as error:  # an output that cannot even be read
        raise VerificationError(error.reason, cmd=error.cmd, stderr=error.stderr) from error
    if (off := abs(duration - expected_duration)) > (allowed := tolerance + ratio * expected_duration):
        raise VerificationError(
            f"output duration {duration:.1f} s differs from the fragments' {expected_duration:.1f} s"
            f" by {off:.1f} s (at most {allowed:.1f} s allowed)"
        )
    if read is None:
        return
    if errors := last_messages(read.stderr):
        raise VerificationError(f"the output does not decode cleanly near its joins: {errors}")
    _check_monotonic(read, start)
    _check_drift(read, result, max_drift)


def _made(result: StitchResult, windows: Windows) -> Scan | None:
    """The scan stitch() made of these windows, if the file has not changed since."""
    made = result.inspection
    if made is None or made.windows != windows:
        return None
    try:
        return made.scan if stamp(result.path) == made.stamp else None
    except OSError:
        return None  # then the scan says what is wrong with it


def _check_monotonic(read: Scan, start: float) -> None:
    last: dict[int, float] = {}
    for packet in read.packets:
        if packet.dts is None:
            continue
        if packet.stream in last and packet.dts < last[packet.stream]:  # FLV allows equal ones
            raise VerificationError(
                f"{read.kinds.get(packet.stream, 'a')} timestamps go back to {packet.dts - start:.3f} s"
                f" after {last[packet.stream] - start:.3f} s"
            )
        last[packet.stream] = packet.dts


def _check_drift(read: Scan, result: StitchResult, max_drift: float) -> None:
    audio = [p for p in read.packets if read.kinds.get(p.stream) == "audio"]
    if not audio:
        return
    step = Counter(round(p.duration, 6) for p in audio).most_common(1)[0][0]  # one audio frame
    times = [p.pts - result.probe.start_time for p in audio if p.pts is not None]
    for join in result.joins[1:]:
        near = sorted(t for t in times if abs(t - join.offset) <= WINDOW)
        drift = near[-1] - near[0] - (len(near) - 1) * step if near else 0.0
        if abs(drift) > max_drift:
            raise VerificationError(
                f"audio drifts {drift * 1000:+.0f} ms from the video at the join to {join.label}"
                f" ({join.offset:.1f} s; at most {max_drift * 1000:.0f} ms allowed)"
            )
