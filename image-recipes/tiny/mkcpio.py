#!/usr/bin/env python3
"""Write a gzip-compressed newc cpio archive of a directory, owned by root, reproducible.

usage: mkcpio.py ROOTDIR OUT.cpio.gz [--dev PATH:c|b:MAJOR:MINOR:MODE ...]

Written without root: device nodes (e.g. /dev/console, which the kernel opens before /init
runs) are added from --dev specs instead of from the file system.
"""
import gzip, os, stat, sys

MTIME = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))


def header(ino, mode, nlink, size, rmaj, rmin, name):
    namez = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, nlink, MTIME, size, 0, 0, rmaj, rmin, len(namez), 0]
    h = b"070701" + b"".join(b"%08X" % f for f in fields) + namez
    return h + b"\0" * (-len(h) % 4)


def main():
    root, out = sys.argv[1], sys.argv[2]
    devs = []
    args = sys.argv[3:]
    while args:
        if args[0] != "--dev" or len(args) < 2:
            sys.exit("bad arguments: " + " ".join(args))
        path, kind, maj, mnr, mode = args[1].split(":")
        devs.append((path.strip("/"), kind, int(maj), int(mnr), int(mode, 8)))
        args = args[2:]
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for n in sorted(dirnames + filenames):
            p = os.path.join(dirpath, n)
            entries.append((os.path.relpath(p, root), p))
    entries.sort()
    ino = 1
    with open(out + ".tmp", "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0, filename="") as gz:
            for rel, p in entries:
                st = os.lstat(p)
                perm = stat.S_IMODE(st.st_mode)
                if stat.S_ISLNK(st.st_mode):
                    data = os.readlink(p).encode()
                    gz.write(header(ino, stat.S_IFLNK | 0o777, 1, len(data), 0, 0, rel) + data)
                elif stat.S_ISDIR(st.st_mode):
                    gz.write(header(ino, stat.S_IFDIR | perm, 2, 0, 0, 0, rel))
                    data = b""
                elif stat.S_ISREG(st.st_mode):
                    with open(p, "rb") as f:
                        data = f.read()
                    gz.write(header(ino, stat.S_IFREG | perm, 1, len(data), 0, 0, rel) + data)
                else:
                    sys.exit(f"unsupported file type: {p}")
                gz.write(b"\0" * (-len(data) % 4))
                ino += 1
            for rel, kind, maj, mnr, mode in devs:
                fmt = stat.S_IFCHR if kind == "c" else stat.S_IFBLK
                gz.write(header(ino, fmt | mode, 1, 0, maj, mnr, rel))
                ino += 1
            gz.write(header(ino, 0, 1, 0, 0, 0, "TRAILER!!!"))
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main()
