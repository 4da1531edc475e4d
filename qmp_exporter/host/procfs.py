"""Reading small ``/proc`` and ``/sys`` files (Linux) and parsing what they say of a process.

Every read raises :class:`ReadError` with one of ``REASONS`` when it cannot be done, so a
figure that cannot be read is left out, never guessed. ``proc_root`` and ``sys_root`` are
injectable (tests, the 1,000-VM benchmark's generated fixture). Reads go through
``os.open``/``os.read``: about half the cost of ``open().read()`` for these tiny files.
"""

from __future__ import annotations

import errno
import os
import resource

#: Why a figure is missing.
GONE = "gone"  # the process, thread or interface no longer exists
PERMISSION = "permission"  # another user's process, without CAP_SYS_PTRACE
NOT_LINUX = "not_linux"  # no procfs here
MALFORMED = "malformed"  # the kernel said something this reader does not understand
UNSUPPORTED = "unsupported"  # the kernel lacks the file (CONFIG_TASK_IO_ACCOUNTING, ...)
UNTRUSTED = "untrusted"  # the process is not a QEMU binary installed by root
REASONS = (GONE, PERMISSION, NOT_LINUX, MALFORMED, UNSUPPORTED, UNTRUSTED)

TUN_DEVICE = "/dev/net/tun"
#: Fds of one process examined for taps at most (a QEMU opens its taps early, at low fds;
#: a process holding 19,000 fds cost 0.2 s a scan).
MAX_FDS_EXAMINED = 4096

CLOCK_TICKS: int = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_SIZE: int = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class ReadError(ValueError):
    """A read that failed; ``reason`` is one of ``REASONS``. A ``ValueError``, as an
    answer a collector cannot read is: the poll records the collector's failure."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def reason_of(err: OSError) -> str:
    """The reason (one of ``REASONS``) a failed read of a process's file stands for."""
    if err.errno in (errno.ENOENT, errno.ESRCH, errno.ENODEV):
        return GONE
    if err.errno in (errno.EACCES, errno.EPERM):
        return PERMISSION
    return MALFORMED


def read_bytes(path: str, dir_fd: int | None = None) -> bytes:
    """A small procfs or sysfs file whole (``path`` relative to ``dir_fd`` if given)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as err:
        raise ReadError(reason_of(err), path) from None
    try:
        chunks = []
        while chunk := os.read(fd, 8192):
            chunks.append(chunk)
            if len(chunk) < 8192:
                break
        return b"".join(chunks)
    except OSError as err:  # ESRCH: the process exited between open and read
        raise ReadError(reason_of(err), path) from None
    finally:
        os.close(fd)


class FileBudget:
    """How many files all :class:`HeldFiles` of one exporter may hold open: what its sockets
    leave (:meth:`limit`), else half the open-files limit."""

    __slots__ = ("_limit", "held")

    def __init__(self, limit: int | None = None) -> None:
        self.held = 0
        self._limit = limit

    def limit(self, files: int) -> None:
        """Hold at most ``files`` files from now on (those held already stay open)."""
        self._limit = max(0, files)

    def allows_one_more(self) -> bool:
        if self._limit is None:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            self._limit = 1 << 16 if soft == resource.RLIM_INFINITY else soft // 2
        return self.held < self._limit


class HeldFiles:
    """Files read again on every poll, kept open and re-read from the start with one
    ``pread`` (procfs and sysfs regenerate the text at offset 0): a third of the cost of
    opening each time. Past the ``budget``, files are opened for each read. Held until
    :meth:`close_all`.

    A process's files are named relative to ``dir_fd``, an open ``/proc/PID`` directory
    (:func:`open_process_dir`): that directory stays bound to the process it was opened for,
    so a file opened through it, held or opened again after a failed read, is never another
    process's (after the process is gone, every open through it fails with ``ESRCH``).
    A path without ``dir_fd`` (a tap's sysfs counter) is opened again by name after a
    failure: a tap of the same name."""

    __slots__ = ("_budget", "_fds")

    def __init__(self, budget: FileBudget) -> None:
        self._fds: dict[str, int] = {}
        self._budget = budget

    def read(self, path: str, dir_fd: int | None = None) -> bytes:
        """The file whole (up to 8 KiB); :class:`ReadError` when it cannot be read. One
        ``path`` is always read relative to the same ``dir_fd``."""
        fd = self._fds.get(path)
        if fd is None:
            if not self._budget.allows_one_more():
                return read_bytes(path, dir_fd)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError as err:
                raise ReadError(reason_of(err), path) from None
            self._fds[path] = fd
            self._budget.held += 1
        try:
            return os.pread(fd, 8192, 0)
        except OSError as err:  # gone: opened again next time (through dir_fd, if any)
            self.close(path)
            raise ReadError(reason_of(err), path) from None

    def close(self, path: str) -> None:
        """Stop holding ``path``."""
        fd = self._fds.pop(path, None)
        if fd is not None:
            self._budget.held -= 1
            os.close(fd)

    def close_all(self) -> None:
        """Stop holding any file."""
        for path in list(self._fds):
            self.close(path)


def open_process_dir(pid: int, proc_root: str = "/proc") -> int:
    """An open ``/proc/PID`` directory: files opened relative to it (``dir_fd=``) are that
    process's, or fail with ``ESRCH`` once it is gone, even when the PID is reused (procfs
    binds the directory to the process, not to the number). :class:`ReadError` if the
    process is gone already."""
    path = f"{proc_root}/{pid}"
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as err:
        raise ReadError(reason_of(err), path) from None


def read_boot_time(proc_root: str = "/proc") -> float:
    """The host's boot time (``btime`` of ``/proc/stat``, epoch seconds)."""
    try:
        data = read_bytes(f"{proc_root}/stat")
    except ReadError as err:
        raise ReadError(NOT_LINUX if err.reason == GONE else err.reason, "/proc/stat") from None
    for line in data.splitlines():
        if line.startswith(b"btime "):
            return float(line.split()[1])
    raise ReadError(MALFORMED, "no btime in /proc/stat")


def parse_stat_times(data: bytes) -> tuple[float, float, int]:
    """User and system seconds and resident bytes (the same count as ``VmRSS`` of
    ``status``) of ``/proc/PID/stat``: what moves from one poll to the next."""
    return parse_stat(data)[:3]


def parse_stat(data: bytes) -> tuple[float, float, int, float]:
    """:func:`parse_stat_times` and :func:`parse_start` from one split of ``stat``."""
    try:
        fields = _stat_fields(data)
        return (
            int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS,
            int(fields[21]) * PAGE_SIZE, int(fields[19]) / CLOCK_TICKS,
        )  # fmt: skip
    except (ValueError, IndexError) as err:
        raise ReadError(MALFORMED, f"stat: {err}") from None


def parse_start(data: bytes) -> float:
    """Seconds after boot the process of ``/proc/PID/stat`` started (add the boot time,
    :func:`read_boot_time`, for epoch seconds): with the PID, what tells one process from a
    later one."""
    try:
        return int(_stat_fields(data)[19]) / CLOCK_TICKS
    except (ValueError, IndexError) as err:
        raise ReadError(MALFORMED, f"stat: {err}") from None


def _stat_fields(data: bytes) -> list[bytes]:
    """The fields after ``comm``, which is in parentheses and may hold spaces and ``)``:
    field N of proc(5) is item N - 3."""
    return data[data.rindex(b")") + 2 :].split(maxsplit=22)


def parse_uids(data: bytes) -> tuple[int, int]:
    """The real and effective user ids of ``/proc/PID/status`` (its ``Uid:`` line). Not the
    owner of ``/proc/PID``, which is root for any process that made itself non-dumpable."""
    start = data.find(b"\nUid:")
    if start < 0:
        raise ReadError(MALFORMED, "status: no Uid line")
    try:
        fields = data[start + 5 : data.index(b"\n", start + 5)].split()
        return int(fields[0]), int(fields[1])
    except (ValueError, IndexError) as err:
        raise ReadError(MALFORMED, f"status: Uid: {err}") from None


def parse_swap(data: bytes) -> int | None:
    """``VmSwap`` of ``/proc/PID/status`` in bytes (``None``: not reported)."""
    return _status_kb(data, b"\nVmSwap:")


def _status_kb(data: bytes, key: bytes) -> int | None:
    start = data.find(key)
    if start < 0:
        return None
    start += len(key)
    end = data.find(b"\n", start)
    try:
        return int(data[start : end if end >= 0 else None].split()[0]) * 1024
    except (ValueError, IndexError) as err:
        raise ReadError(MALFORMED, f"status: {err}") from None


def parse_io(data: bytes) -> tuple[int, int]:
    """``read_bytes`` and ``write_bytes`` of ``/proc/PID/io`` (what reached storage)."""
    parts = data.split(None, 12)
    if len(parts) > 11 and parts[8] == b"read_bytes:" and parts[10] == b"write_bytes:":
        try:  # the kernel's own layout, from rchar on
            return int(parts[9]), int(parts[11])
        except ValueError:
            pass
    try:
        return _io_field(data, b"\nread_bytes:"), _io_field(data, b"\nwrite_bytes:")
    except ValueError as err:
        raise ReadError(MALFORMED, f"io: {err}") from None


def _io_field(data: bytes, key: bytes) -> int:
    start = data.find(key)
    if start < 0:
        raise ValueError(f"no {key[1:-1].decode()}")
    start += len(key)
    end = data.find(b"\n", start)
    return int(data[start : end if end >= 0 else None])


def parse_schedstat(data: bytes) -> tuple[float, float]:
    """``/proc/PID/task/TID/schedstat``: (seconds on a CPU, seconds runnable but waiting on
    a run queue). The wait is libvirt's ``vcpu.N.delay``, the guest's steal time."""
    parts = data.split()
    try:
        return int(parts[0]) / 1e9, int(parts[1]) / 1e9
    except (ValueError, IndexError) as err:
        raise ReadError(MALFORMED, f"schedstat: {err}") from None


def find_taps(
    pid: int, proc_root: str = "/proc", dir_fd: int | None = None
) -> tuple[list[str], bool]:
    """The tap interfaces process ``pid`` holds: its ``/dev/net/tun`` fds, named by the
    ``iff:`` line of their fdinfo (one name once, however many queues), among its lowest
    :data:`MAX_FDS_EXAMINED` fds; and whether those were all its fds. With ``dir_fd``
    (:func:`open_process_dir`), that process's only, whoever has the PID now. Blocking:
    about 12 µs per fd examined."""
    base = "" if dir_fd is not None else f"{proc_root}/{pid}/"
    try:
        listed = _list_dir(f"{base}fd", dir_fd)
    except OSError as err:
        raise ReadError(reason_of(err), f"{proc_root}/{pid}/fd") from None
    fds = sorted(int(fd) for fd in listed if fd.isdigit())[:MAX_FDS_EXAMINED]
    names: list[str] = []
    for fd in fds:
        try:
            if os.readlink(f"{base}fd/{fd}", dir_fd=dir_fd) != TUN_DEVICE:
                continue
            info = read_bytes(f"{base}fdinfo/{fd}", dir_fd)
        except (OSError, ReadError):
            continue  # closed meanwhile
        for line in info.splitlines():
            if line.startswith(b"iff:"):
                name = line[4:].strip().decode("utf-8", "replace")
                if name and name not in names:
                    names.append(name)
    return names, len(listed) <= MAX_FDS_EXAMINED


def _list_dir(path: str, dir_fd: int | None) -> list[str]:
    if dir_fd is None:
        return os.listdir(path)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def read_counter(path: str) -> int:
    """One integer file (a sysfs statistic)."""
    try:
        return int(read_bytes(path))
    except ValueError as err:
        raise ReadError(MALFORMED, f"{path}: {err}") from None
