"""HLS fragments as one VOD playlist: their segments side by side, no re-mux at all."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import m3u8

from recorder.errors import StitchError
from recorder.stitch._ffmpeg import Deadline
from recorder.stitch._plan import Join, StitchInput, StitchResult
from recorder.stitch._probe import probe_header


def write_playlist(inputs: list[StitchInput], output: Path, deadline: Deadline) -> StitchResult:
    """One playlist with a discontinuity at each join; segments linked or copied beside it.

    An overlap is cut at the segment boundary nearest to it.
    """
    published: dict[Path, Path] = {}  # source file -> its copy beside the output

    def publish(item: StitchInput, uri: str) -> str:
        # Only files beside the fragment's playlist: a crafted one must not publish /etc/passwd.
        source = (item.path.parent / uri).resolve()
        if "://" in uri or source.parent != item.path.parent.resolve() or not source.is_file():
            raise StitchError(f"{item.label}: playlist entry {uri!r} is not a file beside the playlist")
        if source not in published:
            published[source] = output.with_name(f"{output.stem}-{len(published):05d}{source.suffix}")
            _link_or_copy(source, published[source])
        return published[source].name

    body, joins, position = [], [], 0.0
    key_line, map_line, versions, longest = "#EXT-X-KEY:METHOD=NONE", "", [3], 0.0
    try:
        for index, item in enumerate(inputs):
            playlist = m3u8.load(str(item.path))
            versions.append(int(playlist.version or 3))
            segments = list(enumerate(playlist.segments, start=playlist.media_sequence or 0))
            dropped = 0.0
            while segments and dropped + segments[0][1].duration / 2 <= item.trim_start:
                dropped += segments.pop(0)[1].duration
            length = sum(segment.duration for _, segment in segments)
            joins.append(Join(item.label, position, length, "copy", dropped))
            position += length
            for number, segment in segments:
                if segment.discontinuity or (index and number == segments[0][0]):
                    body.append("#EXT-X-DISCONTINUITY")
                line = "#EXT-X-KEY:METHOD=NONE"
                if (key := segment.key) is not None and key.method != "NONE":
                    iv = key.iv or f"0x{number:032x}"  # the default IV is the sequence number, renumbered here
                    line = f'#EXT-X-KEY:METHOD={key.method},URI="{publish(item, key.uri)}",IV={iv}'
                if line != key_line:
                    body.append(key_line := line)
                if (init := segment.init_section) is not None:
                    line = f'#EXT-X-MAP:URI="{publish(item, init.uri)}"'
                    line += f',BYTERANGE="{init.byterange}"' if init.byterange else ""
                    if line != map_line:
                        body.append(map_line := line)
                body.append(f"#EXTINF:{segment.duration:.6f},")
                if segment.byterange:
                    body.append(f"#EXT-X-BYTERANGE:{segment.byterange}")
                body.append(publish(item, segment.uri))
                longest = max(longest, segment.duration)
        header = ["#EXTM3U", f"#EXT-X-VERSION:{max(versions)}", f"#EXT-X-TARGETDURATION:{math.ceil(longest)}"]
        header += ["#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:VOD"]
        output.write_text("\n".join([*header, *body, "#EXT-X-ENDLIST"]) + "\n", encoding="utf-8")
        facts = probe_header(output, "hls", deadline)
    except (StitchError, OSError, ValueError) as error:
        for path in published.values():
            path.unlink(missing_ok=True)
        if isinstance(error, StitchError):
            raise
        raise StitchError(f"cannot write the playlist: {error}") from error
    return StitchResult(output, position, "copy", joins, facts, [], list(published.values()))


def playlist_duration(path: Path) -> float:
    """The sum of a playlist's segment durations; StitchError if one of its files is missing."""
    playlist = m3u8.load(str(path))
    if missing := [s.uri for s in playlist.segments if not (path.parent / s.uri).is_file()]:
        raise StitchError(f"the playlist names {len(missing)} missing segments, first {missing[0]}")
    return sum(segment.duration for segment in playlist.segments)


def _link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)  # same file system: no bytes to copy
    except OSError:
        shutil.copyfile(source, target)
