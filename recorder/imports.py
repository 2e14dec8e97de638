"""Imported fragment lists: JSONL of callback bodies, or CSV.

CSV comes in two shapes: our own columns (``stream_id,file_format,start_time,
end_time,video_url,file_size[,file_id]``), or the file list Tencent's VOD console
exports, where the file name reads ``<stream_id>_<start>_<end>`` with times as
``YYYY-MM-DD-HH-MM-SS`` in the console's time zone, and one column holds the URL.
Both become the same typed fragments as a callback would.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from recorder.errors import BadRequest, first_problem
from recorder.events import FragmentInfo, RecordingFileBody
from recorder.timeutil import parse_time

MAX_ROWS = 100_000
OWN_COLUMNS = {"stream_id", "file_format", "start_time", "end_time", "video_url"}
VOD_NAME = re.compile(
    r"^(?P<stream>.+)_(?P<start>\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})_(?P<end>\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})"
    r"(?:\.\w+)?$"
)
EXTENSIONS = {"mp4": "mp4", "flv": "flv", "m3u8": "hls", "aac": "aac", "m4a": "aac"}


def parse_fragments(data: str, fmt: str, *, tz_offset: str = "+08:00") -> list[FragmentInfo]:
    """Parse an import; BadRequest names the first bad line and what is wrong with it."""
    data = normalized(data)
    if fmt == "jsonl":
        rows = _jsonl_rows(data)
    elif fmt == "csv":
        rows = _csv_rows(data, _zone(tz_offset))
    else:
        raise BadRequest("format: expected 'jsonl' or 'csv'")
    if not rows:
        raise BadRequest("data: no fragments in the import")
    if len(rows) > MAX_ROWS:
        raise BadRequest(f"data: at most {MAX_ROWS} fragments per import")
    return [_fragment(line, row) for line, row in rows]


def decode(raw: bytes) -> str:
    """An uploaded or read import file as text (the VOD console's CSV starts with a BOM)."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("file: expected UTF-8 text") from None


def normalized(data: str) -> str:
    """One text for one list, however it was saved or sent (BOM, CRLF or CR line ends). A list
    of LF lines is left as it is: its job id stays what it was before lists were normalized."""
    return data.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def zone_offset(offset: str) -> str:
    """A UTC offset as ``+HH:MM``; ``+0800`` and ``+08:00`` are the same zone."""
    match = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", offset)
    if not match or int(match[2]) > 23 or int(match[3]) > 59:
        raise BadRequest("timezone: expected an offset from -23:59 to +23:59, like +08:00")
    return f"{match[1]}{match[2]}:{match[3]}"


def _zone(offset: str) -> timezone:
    canonical = zone_offset(offset)
    sign, hours, minutes = canonical[0], int(canonical[1:3]), int(canonical[4:6])
    return timezone((-1 if sign == "-" else 1) * timedelta(hours=hours, minutes=minutes))


def _jsonl_rows(data: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for line, text in enumerate(data.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except (ValueError, RecursionError):
            raise BadRequest(f"line {line}: not valid JSON") from None
        if not isinstance(row, dict):
            raise BadRequest(f"line {line}: expected a JSON object")
        rows.append((line, row))
    return rows


def _csv_rows(data: str, zone: timezone) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(data, newline=""))
    try:
        header = [h.strip() for h in reader.fieldnames or []]
        if not header:
            raise BadRequest("data: the CSV has no header row")
        reader.fieldnames = header
        rows = [(n, {k: (v or "").strip() for k, v in row.items() if k}) for n, row in enumerate(reader, 2)]
    except csv.Error as error:  # e.g. a field over csv's size limit
        raise BadRequest(f"line {reader.line_num + 1}: not valid CSV: {error}") from None  # the line it was reading
    if OWN_COLUMNS <= set(header):
        return rows
    return [(n, _vod_row(n, row, zone)) for n, row in rows]


def _vod_row(line: int, row: dict[str, str], zone: timezone) -> dict[str, Any]:
    """A VOD console row: find the file name and the URL by their shape, the rest by header."""
    urls = [v for v in row.values() if v.startswith(("http://", "https://"))]
    # Not in the URL, whose path may end in the same name.
    name = next((m for v in row.values() if v not in urls and (m := VOD_NAME.match(v))), None)
    url = next(iter(urls), None)
    if name is None or url is None:
        raise BadRequest(
            f"line {line}: expected either the columns {sorted(OWN_COLUMNS)} or a VOD file list row "
            "with a name like <stream_id>_<YYYY-MM-DD-HH-MM-SS>_<YYYY-MM-DD-HH-MM-SS> and a URL"
        )
    extension = urlsplit(url).path.rsplit(".", 1)[-1].lower()
    try:
        start, end = (_console_time(name[part], zone) for part in ("start", "end"))
    except ValueError:
        raise BadRequest(f"line {line}: {name[0]}: its times are not real dates") from None
    result: dict[str, Any] = {
        "stream_id": name["stream"],
        "start_time": start,
        "end_time": end,
        "video_url": url,
        "file_format": EXTENSIONS.get(extension, extension),
    }
    for header, value in row.items():
        lowered = header.lower().replace(" ", "").replace("_", "")
        if lowered in ("fileid", "id") and value:
            result["file_id"] = value
        elif lowered in ("size", "filesize") and value.isdigit():
            result["file_size"] = int(value)
    return result


def _console_time(text: str, zone: timezone) -> float:
    return datetime.strptime(text, "%Y-%m-%d-%H-%M-%S").replace(tzinfo=zone).timestamp()


def _fragment(line: int, row: dict[str, Any]) -> FragmentInfo:
    row = {k: v for k, v in row.items() if v not in ("", None)}
    for field in ("start_time", "end_time"):
        if isinstance(row.get(field), str):
            try:
                row[field] = parse_time(row[field])
            except ValueError:
                raise BadRequest(f"line {line}: {field}: expected UNIX seconds or ISO 8601") from None
    row.setdefault("app", "import")
    row.setdefault("appname", "import")
    row.setdefault("file_id", "url-" + hashlib.sha256(str(row.get("video_url", "")).encode()).hexdigest()[:32])
    try:
        return RecordingFileBody.model_validate(row).to_fragment()
    except ValidationError as error:
        raise BadRequest(f"line {line}: {first_problem(error)}") from None
    except ValueError as error:
        raise BadRequest(f"line {line}: {error}") from None
