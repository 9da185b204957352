"""powerfs: a FUSE file system that forgets, at a "power cut", every write not yet fsynced.

SIGKILL keeps the kernel's page cache, so a program killed by it loses nothing it wrote: a
missing fsync goes unseen. powerfs shows it. It keeps two states of every file and folder:

* the current state, what programs see while "the power is on";
* the durable state, what a disk would hold after the power failed at this very moment.

A `cut` throws the current state away and puts the durable one in its place, as LazyFS does
with its page cache. The programs using the file system are killed first (the harness does
it: a program cannot outlive its power), then restarted on what survived.

What becomes durable, and when, follows what ext4 mounted with data=ordered (Debian's
default, with delalloc and auto_da_alloc, without fast_commit) guarantees:

* File data, and the file's size, become durable at fsync/fdatasync of that file, never
  before: with delayed allocation ext4 gives unsynced data no blocks, so a journal commit
  does not carry it either. A new file that was never fsynced comes back empty.
* Metadata (create, mkdir, unlink, rmdir, rename, link, symlink, truncate) goes into the
  journal's running transaction, in order. ext4 commits that transaction whole, so an
  operation is durable with every one before it once the journal commits past it. fsync of a
  file or folder commits the journal up to the last operation that changed that inode (ext4
  waits for the inode's i_sync_tid): the create of a file that is then fsynced is durable,
  and so is every metadata operation made before it, in any folder. A rename into a folder
  becomes durable with an fsync of either folder, of the file, or of anything changed later.
* auto_da_alloc: a rename that replaces an existing file writes the renamed file's data
  with the rename's transaction, so the replacing file is whole when the rename survives.

`--strict` models a file system without a journal ordering (POSIX's minimum, as ext2 or a
FAT card): a metadata operation is durable only when a folder it changed is fsynced, and a
file's fsync makes nothing of its folder durable.

Simplified, on purpose (each makes the model lose more than ext4, never less):

* No background writeback and no 5-second journal commit: a cut can always come just before
  them. (On ext4 these make more durable, never less.)
* Writes are all-or-nothing per fsync: a cut loses every byte written to a file since its
  last fsync. ext4 may have written some of those pages back meanwhile; a program must not
  count on either, and torn pages (a sector half written) are not modelled at all.
* fdatasync is an fsync, and any unsynced write makes the file's next fsync commit the
  whole running transaction (on ext4 an fdatasync of an overwrite in place may not).
* Permissions, owners and timestamps are not part of the durable state (they survive as
  they are); extended attributes and special files are not supported.
* Everything is held in memory: the file system is for tests of a few hundred MB.
* auto_da_alloc's other case (a file truncated to 0 and rewritten) is not modelled.

Usage: python bench/powerfs.py MOUNTPOINT [--strict] [--control SOCKET]. The control socket
takes one command per line and answers with one JSON line:

* `freeze`: stop time. Every later file system call waits (the program stalls mid-write,
  as at the instant of a cut), and nothing more becomes durable.
* `arm PATTERN N [write|fsync]`: freeze at the N-th write to a file whose path (from the
  mount point, as "/a/b") matches the glob PATTERN, before the write (a cut during an index
  checkpoint, or mid-commit); with `fsync`, right after the N-th fsync of such a file has
  made it durable, before the program learns it.
* `cut`: the power cut: drop everything not durable, then let the waiting calls fail (EIO)
  and thaw. Kill the programs using the file system before (after a `freeze`).
* `status`: counters (fsyncs, writes, frozen or not, trigger hit or not).
"""

from __future__ import annotations

import argparse
import errno
import fnmatch
import json
import os
import stat
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pyfuse3
import trio

PAGE = 4096


@dataclass
class Node:
    """A file, folder or symlink: its current and its durable state."""

    ino: int
    mode: int
    name: str  # a path it was last given (for `arm` and error messages)
    pages: dict[int, bytes] = field(default_factory=dict)  # current data, 4 KiB pages
    size: int = 0
    dirty: set[int] = field(default_factory=set)  # pages written since the last fsync
    dur_pages: dict[int, bytes] = field(default_factory=dict)
    dur_size: int = 0
    entries: dict[bytes, int] = field(default_factory=dict)  # a folder's, current
    dur_entries: dict[bytes, int] = field(default_factory=dict)
    last_op: int = 0  # journal sequence number of the last metadata change to this inode
    nlink: int = 1
    target: bytes = b""  # a symlink's
    mtime_ns: int = field(default_factory=time.time_ns)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def read(self, off: int, size: int) -> bytes:
        end = min(off + size, self.size)
        out = bytearray()
        while off < end:
            idx, start = divmod(off, PAGE)
            n = min(PAGE - start, end - off)
            out += self.pages.get(idx, b"")[start:start + n].ljust(n, b"\0")
            off += n
        return bytes(out)

    def write(self, off: int, buf: bytes) -> None:
        pos = 0
        while pos < len(buf):
            idx, start = divmod(off + pos, PAGE)
            n = min(PAGE - start, len(buf) - pos)
            page = bytearray(self.pages.get(idx, b"").ljust(start, b"\0"))
            page[start:start + n] = buf[pos:pos + n]
            self.pages[idx] = bytes(page)
            self.dirty.add(idx)
            pos += n
        self.size = max(self.size, off + len(buf))

    def truncate(self, size: int) -> None:
        _cut_pages(self.pages, size)
        # the pages cut off are changes too: an fsync after the file grew again must not
        # keep their old durable content in what is now a hole
        self.dirty = {i for i in self.dirty if i * PAGE < size}
        self.dirty.update(i for i in self.dur_pages if i * PAGE >= size)
        if size % PAGE and size < self.size:
            self.dirty.add(size // PAGE)
        self.size = size

    def sync_data(self) -> None:
        """fsync's data part: the written pages and the size become durable."""
        for idx in self.dirty:
            if idx in self.pages:
                self.dur_pages[idx] = self.pages[idx]
            else:
                self.dur_pages.pop(idx, None)
        _cut_pages(self.dur_pages, self.size)
        self.dur_size = self.size
        self.dirty.clear()


def _cut_pages(pages: dict[int, bytes], size: int) -> None:
    for idx in [i for i in pages if i * PAGE >= size]:
        del pages[idx]
    last = size // PAGE
    if size % PAGE and last in pages:
        pages[last] = pages[last][: size % PAGE]


@dataclass
class Op:
    """A metadata operation waiting in the journal for its commit."""

    seq: int
    kind: str  # "link" (create, mkdir, link, symlink), "unlink", "rename", "truncate"
    folders: tuple[int, ...]  # the folders it changes (for --strict)
    args: tuple[Any, ...]


class PowerFS(pyfuse3.Operations):
    def __init__(self, strict: bool = False):
        super().__init__()
        self.strict = strict
        root = Node(pyfuse3.ROOT_INODE, stat.S_IFDIR | 0o755, "", nlink=2)
        self.nodes: dict[int, Node] = {root.ino: root}
        self.next_ino = root.ino + 1
        self.journal: list[Op] = []
        self.seq = 0
        self.handles: dict[int, int] = {}  # file handle -> inode
        self.next_fh = 1
        self.frozen = False
        self.thaw = trio.Event()
        self.trigger: tuple[str, int, str] | None = None  # (pattern, count, "write"|"fsync")
        self.stats = {"fsyncs": 0, "writes": 0, "cuts": 0, "triggered": 0}

    # ------------------------------------------------------------ the model

    def _log(self, kind: str, folders: tuple[int, ...], *args: Any) -> None:
        self.seq += 1
        self.journal.append(Op(self.seq, kind, folders, args))
        for ino in folders:
            self.nodes[ino].last_op = self.seq
        if kind in ("link", "rename", "truncate"):
            self.nodes[args[-1] if kind != "truncate" else args[0]].last_op = self.seq

    def _apply(self, op: Op) -> None:
        """Make a journalled operation durable."""
        if op.kind == "link":
            folder, name, ino = op.args
            self.nodes[folder].dur_entries[name] = ino
        elif op.kind == "unlink":
            folder, name = op.args
            self.nodes[folder].dur_entries.pop(name, None)
        elif op.kind == "rename":
            old, old_name, new, new_name, data, ino = op.args
            if self.nodes[old].dur_entries.get(old_name) == ino:
                del self.nodes[old].dur_entries[old_name]
            self.nodes[new].dur_entries[new_name] = ino
            if data is not None:  # auto_da_alloc: the replacing file's data goes with it
                node = self.nodes[ino]
                node.dur_pages, node.dur_size = dict(data[0]), data[1]
        elif op.kind == "truncate":
            ino, size = op.args
            node = self.nodes[ino]
            _cut_pages(node.dur_pages, size)
            node.dur_size = min(node.dur_size, size)

    def _commit(self, node: Node, data: bool) -> None:
        """What fsync of `node` makes durable, besides its data (`data`: it had unsynced
        writes or a new size)."""
        if self.strict:
            keep = []
            for op in self.journal:
                if node.ino in op.folders:
                    self._apply(op)
                else:
                    keep.append(op)
            self.journal = keep
            return
        # ext4: the journal commits, in order, up to this inode's last change. Unsynced data
        # means a change now: blocks to allocate (delalloc), a new size or mtime to log, in
        # the running transaction, which commits whole (with every operation before it).
        upto = self.seq if data else node.last_op
        while self.journal and self.journal[0].seq <= upto:
            self._apply(self.journal.pop(0))

    def cut(self) -> None:
        """The power fails: the durable state becomes the current one."""
        self.journal.clear()
        for node in self.nodes.values():
            node.pages, node.size = dict(node.dur_pages), node.dur_size
            node.dirty.clear()
            node.entries = dict(node.dur_entries)
        # what no durable folder names is gone (files unlinked or never linked durably)
        seen, todo = set(), [pyfuse3.ROOT_INODE]
        while todo:
            ino = todo.pop()
            if ino in seen:
                continue
            seen.add(ino)
            todo.extend(self.nodes[ino].entries.values())
        self.nodes = {i: n for i, n in self.nodes.items() if i in seen}
        for node in self.nodes.values():
            node.nlink = 2 if node.is_dir else 0
        for node in self.nodes.values():
            for ino in node.entries.values():
                if not self.nodes[ino].is_dir:
                    self.nodes[ino].nlink += 1
        self.handles.clear()
        self.stats["cuts"] += 1

    # ------------------------------------------------------------ helpers

    async def _gate(self) -> None:
        """While frozen, every call waits for the cut and then fails."""
        if self.frozen:
            await self.thaw.wait()
            raise pyfuse3.FUSEError(errno.EIO)

    async def _tick(self, node: Node, kind: str) -> None:
        """Count a write or fsync against the armed trigger; freeze at its last one."""
        if not self.trigger or self.trigger[2] != kind:
            return
        pattern, left, _ = self.trigger
        if not fnmatch.fnmatchcase(node.name, pattern):
            return
        self.trigger = (pattern, left - 1, kind) if left > 1 else None
        if left == 1:
            self.frozen = True
            self.stats["triggered"] += 1
            await self._gate()

    def _node(self, ino: int) -> Node:
        try:
            return self.nodes[ino]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _attr(self, node: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.ino
        a.st_mode = node.mode
        a.st_nlink = node.nlink
        a.st_uid = a.st_gid = 0
        a.st_size = len(node.target) if stat.S_ISLNK(node.mode) else node.size
        a.st_blksize = PAGE
        a.st_blocks = (node.size + 511) // 512
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = node.mtime_ns
        # no caching in the kernel: after a cut the names and sizes are other ones
        a.entry_timeout = a.attr_timeout = 0
        return a

    def _new(self, parent: int, name: bytes, mode: int) -> Node:
        folder = self._node(parent)
        if name in folder.entries:
            raise pyfuse3.FUSEError(errno.EEXIST)
        node = Node(self.next_ino, mode, f"{folder.name}/{name.decode(errors='replace')}",
                    nlink=2 if stat.S_ISDIR(mode) else 1)
        self.next_ino += 1
        self.nodes[node.ino] = node
        folder.entries[name] = node.ino
        folder.mtime_ns = time.time_ns()
        self._log("link", (parent,), parent, name, node.ino)
        return node

    # ------------------------------------------------------------ FUSE operations

    async def lookup(self, parent_inode, name, ctx=None):  # type: ignore[no-untyped-def]
        await self._gate()
        folder = self._node(parent_inode)
        if name == b".":
            return self._attr(folder)
        ino = folder.entries.get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(self.nodes[ino])

    async def getattr(self, inode, ctx=None):  # type: ignore[no-untyped-def]
        await self._gate()
        return self._attr(self._node(inode))

    async def setattr(self, inode, attr, fields, fh, ctx):  # type: ignore[no-untyped-def]
        await self._gate()
        node = self._node(inode)
        if fields.update_size:
            node.truncate(attr.st_size)
            self._log("truncate", (), inode, attr.st_size)
        if fields.update_mode:
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
        return self._attr(node)

    async def readlink(self, inode, ctx):  # type: ignore[no-untyped-def]
        await self._gate()
        return self._node(inode).target

    async def opendir(self, inode, ctx):  # type: ignore[no-untyped-def]
        await self._gate()
        self._node(inode)
        return inode

    async def readdir(self, fh, start_id, token):  # type: ignore[no-untyped-def]
        await self._gate()
        folder = self._node(fh)
        names = sorted(folder.entries.items())
        for i, (name, ino) in enumerate(names[start_id:], start_id + 1):
            if ino in self.nodes and not pyfuse3.readdir_reply(
                token, name, self._attr(self.nodes[ino]), i
            ):
                break

    async def releasedir(self, fh):  # type: ignore[no-untyped-def]
        pass

    async def mkdir(self, parent_inode, name, mode, ctx):  # type: ignore[no-untyped-def]
        await self._gate()
        return self._attr(self._new(parent_inode, name, stat.S_IFDIR | stat.S_IMODE(mode)))

    async def symlink(self, parent_inode, name, target, ctx):  # type: ignore[no-untyped-def]
        await self._gate()
        node = self._new(parent_inode, name, stat.S_IFLNK | 0o777)
        node.target = target
        return self._attr(node)

    async def _remove(self, parent_inode: int, name: bytes, want_dir: bool) -> None:
        await self._gate()
        folder = self._node(parent_inode)
        ino = folder.entries.get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        node = self.nodes[ino]
        if want_dir != node.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR if want_dir else errno.EISDIR)
        if want_dir and node.entries:
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        del folder.entries[name]
        node.nlink -= 1
        self._log("unlink", (parent_inode,), parent_inode, name)

    async def unlink(self, parent_inode, name, ctx):  # type: ignore[no-untyped-def]
        await self._remove(parent_inode, name, False)

    async def rmdir(self, parent_inode, name, ctx):  # type: ignore[no-untyped-def]
        await self._remove(parent_inode, name, True)

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new,  # type: ignore[no-untyped-def]
                     flags, ctx):
        await self._gate()
        if flags & ~pyfuse3.RENAME_NOREPLACE:
            raise pyfuse3.FUSEError(errno.EINVAL)  # RENAME_EXCHANGE: not supported
        old, new = self._node(parent_inode_old), self._node(parent_inode_new)
        ino = old.entries.get(name_old)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        replaced = new.entries.get(name_new)
        data = None
        if replaced is not None and replaced != ino:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise pyfuse3.FUSEError(errno.EEXIST)
            gone = self.nodes[replaced]
            if gone.is_dir and gone.entries:
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
            gone.nlink -= 1
            node = self.nodes[ino]
            if not node.is_dir:  # auto_da_alloc
                data = (dict(node.pages), node.size)
        del old.entries[name_old]
        new.entries[name_new] = ino
        self.nodes[ino].name = f"{new.name}/{name_new.decode(errors='replace')}"
        self._log("rename", (parent_inode_old, parent_inode_new), parent_inode_old, name_old,
                  parent_inode_new, name_new, data, ino)

    async def link(self, inode, new_parent_inode, new_name, ctx):  # type: ignore[no-untyped-def]
        await self._gate()
        node = self._node(inode)
        folder = self._node(new_parent_inode)
        if new_name in folder.entries:
            raise pyfuse3.FUSEError(errno.EEXIST)
        folder.entries[new_name] = inode
        node.nlink += 1
        self._log("link", (new_parent_inode,), new_parent_inode, new_name, inode)
        return self._attr(node)

    async def open(self, inode, flags, ctx):  # type: ignore[no-untyped-def]
        await self._gate()
        node = self._node(inode)
        if flags & os.O_TRUNC:
            node.truncate(0)
            self._log("truncate", (), inode, 0)
        return self._handle(node)

    def _handle(self, node: Node) -> pyfuse3.FileInfo:
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = node.ino
        # keep_cache False: the kernel drops its copy of the pages at each open (a cut
        # happens while no program has the file open)
        return pyfuse3.FileInfo(fh=fh, keep_cache=False)

    async def create(self, parent_inode, name, mode, flags, ctx):  # type: ignore[no-untyped-def]
        await self._gate()
        node = self._new(parent_inode, name, stat.S_IFREG | stat.S_IMODE(mode))
        return self._handle(node), self._attr(node)

    def _file(self, fh: int) -> Node:
        try:
            return self.nodes[self.handles[fh]]
        except KeyError:
            raise pyfuse3.FUSEError(errno.EBADF) from None

    async def read(self, fh, off, size):  # type: ignore[no-untyped-def]
        await self._gate()
        return self._file(fh).read(off, size)

    async def write(self, fh, off, buf):  # type: ignore[no-untyped-def]
        await self._gate()
        node = self._file(fh)
        await self._tick(node, "write")
        node.write(off, bytes(buf))
        node.mtime_ns = time.time_ns()
        self.stats["writes"] += 1
        return len(buf)

    async def flush(self, fh):  # type: ignore[no-untyped-def]
        pass  # close() makes nothing durable

    async def release(self, fh):  # type: ignore[no-untyped-def]
        self.handles.pop(fh, None)

    async def fsync(self, fh, datasync):  # type: ignore[no-untyped-def]
        await self._gate()
        node = self._file(fh)
        data = bool(node.dirty) or node.size != node.dur_size
        node.sync_data()
        self._commit(node, data)
        self.stats["fsyncs"] += 1
        await self._tick(node, "fsync")

    async def fsyncdir(self, fh, datasync):  # type: ignore[no-untyped-def]
        await self._gate()
        self._commit(self._node(fh), False)
        self.stats["fsyncs"] += 1

    async def statfs(self, ctx):  # type: ignore[no-untyped-def]
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = PAGE
        s.f_blocks = 1 << 22  # 16 GiB, mostly free
        used = sum(n.size for n in self.nodes.values()) // PAGE
        s.f_bfree = s.f_bavail = s.f_blocks - used
        s.f_files = s.f_ffree = s.f_favail = 1 << 20
        s.f_namemax = 255
        return s

    async def forget(self, inode_list):  # type: ignore[no-untyped-def]
        pass  # nodes live until a cut finds them unreachable

    # ------------------------------------------------------------ control

    def command(self, line: str) -> dict[str, Any]:
        words = line.split()
        if words[:1] == ["freeze"]:
            self.frozen = True
        elif words[:1] == ["arm"] and len(words) in (3, 4):
            kind = words[3] if len(words) == 4 else "write"
            if kind not in ("write", "fsync"):
                return {"error": f"arm: {kind!r} is neither write nor fsync"}
            self.trigger = (words[1], max(1, int(words[2])), kind)
        elif words[:1] == ["cut"]:
            self.cut()
            self.frozen = False
            self.trigger = None
            self.thaw.set()  # the calls that waited fail now (their programs are dead)
            self.thaw = trio.Event()
        elif words[:1] != ["status"]:
            return {"error": f"unknown command {line!r}"}
        return {**self.stats, "frozen": self.frozen, "armed": self.trigger is not None,
                "files": len(self.nodes), "pending": len(self.journal)}


async def _serve_control(fs: PowerFS, path: str) -> None:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    if os.path.exists(path):
        os.unlink(path)
    await sock.bind(path)
    sock.listen(4)
    while True:
        conn, _ = await sock.accept()
        with conn:
            buf = b""
            while True:
                data = await conn.recv(4096)
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    answer = fs.command(line.decode())
                    await conn.send((json.dumps(answer) + "\n").encode())


def control(path: str, command: str) -> dict[str, Any]:
    """Send one command to a running powerfs; its answer."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(path)
        s.sendall(command.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            data = s.recv(4096)
            if not data:
                break
            buf += data
    answer: dict[str, Any] = json.loads(buf)
    return answer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mountpoint")
    ap.add_argument("--control", help="unix socket for freeze/arm/cut/status")
    ap.add_argument("--strict", action="store_true",
                    help="no journal ordering: only a folder's fsync makes its entries durable")
    args = ap.parse_args(argv)
    fs = PowerFS(strict=args.strict)
    options = set(pyfuse3.default_options)
    options.add("fsname=powerfs")
    pyfuse3.init(fs, args.mountpoint, options)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            if args.control:
                nursery.start_soon(_serve_control, fs, args.control)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()

    try:
        trio.run(run)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
