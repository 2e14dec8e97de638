"""The ffmpeg step: probe fragments, plan the joins, join them, verify the result.

Fragments join in stream copy through the concat demuxer, with a ``duration`` line per file
so that each one's first frame lands right after the previous one's last. A fragment that
cannot join as it is gets rewritten first, into its own container family: re-encoded to the
majority's parameters, or with its audio re-encoded to its video's length, or only remuxed
(timestamp resets, an overlap to cut off its end, streams in another order). Every file the
demuxer reads must share the same time bases, because it never rescales timestamps between
files (measured: an FLV then an MP4 came out 575 s long instead of 13 s).

Modules: ``_probe`` (ffprobe facts), ``_plan`` (the pure part: majority, strategies, data),
``_join`` (rewrites and the concat), ``_playlist`` (HLS playlist output), ``_verify`` (the
gate before archiving), ``_ffmpeg`` (running commands with deadlines).
"""

from recorder.stitch._join import stitch
from recorder.stitch._plan import (
    FORMATS,
    AudioParams,
    Join,
    StitchInput,
    StitchPlan,
    StitchResult,
    VideoParams,
    expected_duration,
    output_extension,
    plan,
)
from recorder.stitch._probe import ProbeFacts, probe
from recorder.stitch._verify import VerificationError, verify

__all__ = [
    "FORMATS",
    "AudioParams",
    "Join",
    "ProbeFacts",
    "StitchInput",
    "StitchPlan",
    "StitchResult",
    "VerificationError",
    "VideoParams",
    "expected_duration",
    "output_extension",
    "plan",
    "probe",
    "stitch",
    "verify",
]
