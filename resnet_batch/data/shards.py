"""Tar shards (WebDataset style): their image members listed from the headers alone, one
row each, `shard.tar/member`, carrying where the member's bytes lie; members that must not
be read carry their reason."""

from __future__ import annotations

import tarfile

import pyarrow as pa

from ..core.columns import PATH
from ..core.errors import UsageError, one_line
from ..core.identity import as_text, member_escapes
from ..core.storage import NotRegularFile
from .manifests import GZIP_TAR_EXTENSIONS, LIST_ERROR, TAR_EXTENSIONS, TAR_OFFSET, TAR_SIZE, is_image, open_input


def list_tar_members(uri: str) -> pa.Table:
    """One row per image member name of a WebDataset-style shard: path `shard.tar/key.jpg`.

    Only the headers are read (seeking over member data), so remote shards are not
    downloaded here; workers later fetch each member by byte range. A member named like an
    image that cannot be read as one (a name that leaves the shard, a link, a device) gets
    a row with its reason: it is an input all the same. Names are normalised (`./a.jpg`
    and `b//c.jpg` are `a.jpg` and `b/c.jpg`), and a name the shard holds twice is one
    input: the last member of that name, the one `tar -x` leaves. A shard cut short keeps
    the members before the break, and one `list_failed` row of its own says where it broke.
    """
    if uri.lower().endswith(GZIP_TAR_EXTENSIONS):
        raise UsageError(
            f"cannot read tar shard {uri}: it is gzip-compressed, so its members cannot be read by "
            "byte range; gunzip it to a .tar"
        )
    members: dict[str, tuple[int, int, str | None]] = {}
    broken = None
    try:
        with open_input(uri) as f, tarfile.open(fileobj=f, mode="r:") as tar:
            try:
                for member in tar:
                    if (is_image(member.name) or member.name.lower().endswith(TAR_EXTENSIONS)) and not member.isdir():
                        members.pop(_member_key(member.name), None)  # the last of a name, in its own place
                        members[_member_key(member.name)] = _member_entry(member)
                cut = _cut_header(f, tar.offset)
                if cut:
                    raise tarfile.ReadError(cut)
            except (OSError, EOFError, tarfile.TarError) as exc:
                broken = (
                    f"cannot read tar shard {uri} past its first {len(members)} image members: "
                    f"{type(exc).__name__}: {one_line(exc)}"
                )
    except NotRegularFile:
        raise
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise UsageError(f"cannot read tar shard {uri}: {type(exc).__name__}: {one_line(exc)}") from None
    paths = [f"{uri}/{as_text(name)}" for name in members] + ([uri] if broken else [])
    rows = list(members.values()) + ([(-1, -1, f"list_failed: {broken}")] if broken else [])
    return pa.table(
        {
            PATH: pa.array(paths, pa.string()),
            TAR_OFFSET: pa.array([r[0] for r in rows], pa.int64()),
            TAR_SIZE: pa.array([r[1] for r in rows], pa.int64()),
            LIST_ERROR: pa.array([r[2] for r in rows], pa.string()),
        }
    )


def _member_key(name: str) -> str:
    """A member's name without `.` parts or repeated slashes; an absolute name stays absolute."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return ("/" if name.startswith("/") else "") + "/".join(parts)


def _cut_header(f, end: int) -> str | None:
    """Why a shard whose members ended at `end` was cut inside a header, or None: Python's
    tarfile takes a header cut short for the end of the archive, where a whole one would
    be followed by zero blocks (or nothing)."""
    f.seek(end)
    rest = f.read(1024)
    if rest.strip(b"\0"):
        return f"a member's header is cut short at byte {end} ({len(rest)} bytes left)"
    return None


def _member_entry(member: tarfile.TarInfo) -> tuple[int, int, str | None]:
    """(offset, size, error) of an image member; an error where it cannot be read as one."""
    if member_escapes(member.name):
        return -1, -1, "unsafe_member: its name leaves the shard (absolute, or with ..); not read"
    if not member.isfile():
        return -1, -1, "not_a_file: a tar member that is a link or a device, not a regular file"
    if member.name.lower().endswith(TAR_EXTENSIONS):
        return -1, -1, "nested_shard: a tar shard inside a tar shard is not read; extract it and label it as a shard"
    return member.offset_data, member.size, None
