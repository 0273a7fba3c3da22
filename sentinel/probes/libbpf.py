"""A thin ctypes binding of libbpf (``libbpf.so.1``, Debian's ``libbpf1``): open, load and
attach a compiled BPF object, read and write its maps, run an iterator, and drain its ring
buffer from the caller's event loop.

Hand-written on purpose: no well-kept Python binding of libbpf fits (bcc compiles at run
time against kernel headers, over 100 MiB, and cannot load a prebuilt CO-RE object;
the small libbpf wrappers on PyPI are unmaintained), and Sentinel needs about twenty
functions of libbpf's stable C ABI (libbpf 1.x: failures return NULL or a negative errno
and set ``errno``).

Layer 1 (probes): standard library only. ``LibbpfError`` carries the errno, the stage
that failed and libbpf's own log (the verifier's message on a refusal).
"""

from __future__ import annotations

import ctypes as C
import errno as _errno
import os
import threading
from collections.abc import Callable

_vp = C.c_void_p
RING_CALLBACK = C.CFUNCTYPE(C.c_int, _vp, _vp, C.c_size_t)
PRINT_CALLBACK = C.CFUNCTYPE(C.c_int, C.c_int, C.c_char_p, _vp)
LOG_KEEP = 60  # lines of libbpf's log kept for the error message
LIBBPF_DEBUG = 2  # enum libbpf_print_level: WARN 0, INFO 1, DEBUG 2


class LibbpfError(OSError):
    """A libbpf call failed: ``errno`` (``EPERM`` no rights or seccomp, ``EACCES`` the
    verifier refused, ``ESRCH``/``ENOENT`` no usable kernel BTF or attach target...),
    ``stage`` (``"library"``, ``"open"``, ``"load"``, ``"attach"``, ``"map"``,
    ``"iterator"``, ``"ring buffer"``) and ``log``: libbpf's last lines for this object."""

    def __init__(self, err: int, stage: str, what: str, log: list[str]) -> None:
        super().__init__(err, f"{what}: {os.strerror(err)}")
        self.stage = stage
        self.log = log


class _Lib:
    """libbpf's functions, typed; loaded once (``library()``)."""

    def __init__(self, path: str = "libbpf.so.1") -> None:
        lib = C.CDLL(path, use_errno=True)
        libc = C.CDLL(None, use_errno=True)

        def fn(name: str, res, *args):
            f = getattr(lib, name)
            f.restype, f.argtypes = res, list(args)
            return f

        self.open_mem = fn("bpf_object__open_mem", _vp, _vp, C.c_size_t, _vp)
        self.load = fn("bpf_object__load", C.c_int, _vp)
        self.close = fn("bpf_object__close", None, _vp)
        self.find_program = fn("bpf_object__find_program_by_name", _vp, _vp, C.c_char_p)
        self.find_map = fn("bpf_object__find_map_by_name", _vp, _vp, C.c_char_p)
        self.set_autoload = fn("bpf_program__set_autoload", C.c_int, _vp, C.c_bool)
        self.attach = fn("bpf_program__attach", _vp, _vp)
        self.attach_iter = fn("bpf_program__attach_iter", _vp, _vp, _vp)
        self.link_fd = fn("bpf_link__fd", C.c_int, _vp)
        self.link_destroy = fn("bpf_link__destroy", C.c_int, _vp)
        self.iter_create = fn("bpf_iter_create", C.c_int, C.c_int)
        self.map_fd = fn("bpf_map__fd", C.c_int, _vp)
        self.update = fn("bpf_map_update_elem", C.c_int, C.c_int, _vp, _vp, C.c_uint64)
        self.lookup = fn("bpf_map_lookup_elem", C.c_int, C.c_int, _vp, _vp)
        self.delete = fn("bpf_map_delete_elem", C.c_int, C.c_int, _vp)
        self.next_key = fn("bpf_map_get_next_key", C.c_int, C.c_int, _vp, _vp)
        self.ring_new = fn("ring_buffer__new", _vp, C.c_int, RING_CALLBACK, _vp, _vp)
        self.ring_free = fn("ring_buffer__free", None, _vp)
        self.ring_epoll_fd = fn("ring_buffer__epoll_fd", C.c_int, _vp)
        self.ring_consume = fn("ring_buffer__consume", C.c_int, _vp)
        self.set_print = fn("libbpf_set_print", _vp, PRINT_CALLBACK)
        self.vsnprintf = libc.vsnprintf
        self.vsnprintf.restype = C.c_int
        self.vsnprintf.argtypes = [C.c_char_p, C.c_size_t, C.c_char_p, _vp]
        self.log: list[str] = []
        # libbpf prints to stderr by default; its lines are kept for the error message
        # instead (a refused load names the verifier's complaint in one line).
        self._printer = PRINT_CALLBACK(self._print)
        self.set_print(self._printer)

    def _print(self, level: int, fmt: bytes, args) -> int:
        if level >= LIBBPF_DEBUG:  # CO-RE relocation chatter: hundreds of lines a load
            return 0
        try:
            buf = C.create_string_buffer(2048)
            self.vsnprintf(buf, len(buf), fmt, args)
            self.log.append(buf.value.decode(errors="replace"))
            del self.log[:-LOG_KEEP]
        except Exception:  # never raise through C
            pass
        return 0


_lib: _Lib | None = None
_lib_lock = threading.Lock()


def library() -> _Lib:
    """libbpf, loaded on first use. Raises ``LibbpfError`` (stage ``"library"``,
    ``ENOENT``) when ``libbpf.so.1`` is not installed."""
    global _lib
    with _lib_lock:
        if _lib is None:
            try:
                _lib = _Lib()
            except (OSError, AttributeError) as exc:
                raise LibbpfError(_errno.ENOENT, "library", "libbpf.so.1 not loadable",
                                  [str(exc)]) from None  # dlopen's own words
        return _lib


def _error(lib: _Lib, stage: str, what: str, rc: int | None = None) -> LibbpfError:
    err = -rc if rc is not None and rc < 0 else (C.get_errno() or _errno.EINVAL)
    return LibbpfError(err, stage, what, list(lib.log))


class BpfObject:
    """One loaded BPF object. ``BpfObject(data, programs, attach=...)`` opens the object
    file's bytes (``data``), loads the named ``programs`` only (the others are not
    loaded) and attaches those in ``attach`` (all of ``programs`` by default; an
    ``iter/`` program is attached with ``iterate``). Raises ``LibbpfError`` at the
    stage that failed, with nothing left open. ``close()`` detaches and frees all."""

    def __init__(self, data: bytes, programs: tuple[str, ...],
                 attach: tuple[str, ...] | None = None) -> None:
        self.lib = lib = library()
        lib.log.clear()
        self._mem = C.create_string_buffer(bytes(data), len(data))  # outlives the object
        self._obj = lib.open_mem(self._mem, len(data), None)
        self._links: dict[str, int] = {}
        self._rings: list[RingBuffer] = []
        if not self._obj:
            raise _error(lib, "open", "the BPF object cannot be opened")
        try:
            wanted = set(programs)
            for name in programs:
                if not lib.find_program(self._obj, name.encode()):
                    raise LibbpfError(_errno.ENOENT, "open", f"no program {name} in the "
                                      "BPF object", list(lib.log))
            self._all = wanted
            rc = lib.load(self._obj)
            if rc:
                raise _error(lib, "load", "the BPF programs cannot be loaded", rc)
            for name in (programs if attach is None else attach):
                link = lib.attach(self._program(name))
                if not link:
                    raise _error(lib, "attach", f"{name} cannot be attached")
                self._links[name] = link
        except BaseException:
            self.close()
            raise

    def _program(self, name: str) -> int:
        return self.lib.find_program(self._obj, name.encode())

    def map_fd(self, name: str) -> int:
        """The fd of map ``name``; ``LibbpfError`` (stage ``"map"``) when absent."""
        m = self.lib.find_map(self._obj, name.encode()) if self._obj else None
        if not m:
            raise LibbpfError(_errno.ENOENT, "map", f"no map {name}", [])
        return self.lib.map_fd(m)

    def update(self, fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
        """``bpf_map_update_elem``; raises ``LibbpfError`` (stage ``"map"``)."""
        k = C.create_string_buffer(key, len(key))
        v = C.create_string_buffer(value, len(value))
        if self.lib.update(fd, k, v, flags):
            raise _error(self.lib, "map", "map update")

    def lookup(self, fd: int, key: bytes, size: int) -> bytes | None:
        """The value (``size`` bytes) under ``key``, ``None`` when absent."""
        k = C.create_string_buffer(key, len(key))
        v = C.create_string_buffer(size)
        if self.lib.lookup(fd, k, v):
            return None
        return v.raw

    def delete(self, fd: int, key: bytes) -> bool:
        """Delete ``key``; ``False`` when it was absent."""
        return self.lib.delete(fd, C.create_string_buffer(key, len(key))) == 0

    def keys(self, fd: int, size: int) -> list[bytes]:
        """Every key of a hash map (``size`` bytes each), in the kernel's order."""
        out: list[bytes] = []
        cur = None
        nxt = C.create_string_buffer(size)
        while self.lib.next_key(fd, cur, nxt) == 0:
            out.append(nxt.raw)
            cur = C.create_string_buffer(nxt.raw, size)
            if len(out) > 1 << 20:  # a map that changes under us cannot loop forever
                break
        return out

    def iterate(self, name: str) -> int:
        """Run the ``iter/`` program ``name`` once over its objects (reads the iterator
        to its end); the bytes it wrote. Raises ``LibbpfError`` (stage ``"iterator"``)."""
        lib = self.lib
        link = lib.attach_iter(self._program(name), None)
        if not link:
            raise _error(lib, "iterator", f"{name} cannot be attached")
        try:
            fd = lib.iter_create(lib.link_fd(link))
            if fd < 0:
                raise _error(lib, "iterator", f"{name} cannot be started", fd)
            try:
                total = 0
                while chunk := os.read(fd, 4096):
                    total += len(chunk)
                return total
            finally:
                os.close(fd)
        finally:
            lib.link_destroy(link)

    def ring_buffer(self, name: str, on_record: Callable[[bytes], None]) -> RingBuffer:
        """A ``RingBuffer`` over ring-buffer map ``name``, calling ``on_record(bytes)``."""
        ring = RingBuffer(self, self.map_fd(name), on_record)
        self._rings.append(ring)
        return ring

    def close(self) -> None:
        lib = self.lib
        for ring in self._rings:
            ring.close()
        self._rings.clear()
        for link in self._links.values():
            lib.link_destroy(link)
        self._links.clear()
        if self._obj:
            lib.close(self._obj)
            self._obj = None


class RingBuffer:
    """libbpf's ring-buffer reader. ``fd`` is an epoll fd, readable when records wait
    (give it to ``loop.add_reader``); ``consume()`` calls ``on_record(bytes)`` for each
    waiting record, without blocking, and returns how many. An exception in
    ``on_record`` is kept in ``errors`` (ctypes would print and swallow it)."""

    def __init__(self, obj: BpfObject, map_fd: int, on_record: Callable[[bytes], None]) -> None:
        self.lib = obj.lib
        self.on_record = on_record
        self.errors: list[BaseException] = []
        self._callback = RING_CALLBACK(self._record)  # kept: the C side holds it
        self._rb = self.lib.ring_new(map_fd, self._callback, None, None)
        if not self._rb:
            raise _error(self.lib, "ring buffer", "the ring buffer cannot be opened")
        self.fd = self.lib.ring_epoll_fd(self._rb)

    def _record(self, _ctx, data, size: int) -> int:
        try:
            self.on_record(C.string_at(data, size))
        except BaseException as exc:
            self.errors.append(exc)
        return 0

    def consume(self) -> int:
        if not self._rb:
            return 0
        n = self.lib.ring_consume(self._rb)
        if self.errors:
            exc, self.errors = self.errors[0], []
            raise exc
        return max(n, 0)

    def close(self) -> None:
        if self._rb:
            self.lib.ring_free(self._rb)
            self._rb = None
            self.fd = -1
