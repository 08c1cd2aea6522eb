"""The tar builder the seed scripts share: members as (name, kind, extra) with kind one of
dir, file (extra = bytes), sym and hard (extra = link target)."""
import io, tarfile


def tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                t.addfile(info)
            elif kind == "file":
                info.size = len(extra)
                info.mode = 0o644
                t.addfile(info, io.BytesIO(extra))
            elif kind == "sym":
                info.type = tarfile.SYMTYPE
                info.linkname = extra
                t.addfile(info)
            elif kind == "hard":
                info.type = tarfile.LNKTYPE
                info.linkname = extra
                t.addfile(info)
    return buf.getvalue()
