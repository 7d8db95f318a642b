"""Opens listening sockets inside a sandbox's network namespace and hands them to the worker.

A standalone program (the standard library only), started once per worker process by
``controlplane.sandbox``: entering another user and network namespace (``setns``) is allowed only
to a single-threaded process, which a worker is not, and forking the worker for it would copy its
whole address space. This small process forks a child per request instead; the child enters the
sandbox's network namespace (and the user namespace that owns it), binds ``127.0.0.1:<port>`` for
each port asked, passes the listening sockets back over the channel (SCM_RIGHTS) and exits. The
worker then accepts the sandbox's connections itself: no process in the sandbox is involved.

Protocol on the channel (a SOCK_SEQPACKET socket whose fd is ``argv[1]``): the worker sends
``"<pid> <port> <port> ..."`` (pid: the sandbox's init, as the host sees it); the answer is
``b"ok"`` with one fd per port, or ``b"error: <why>"``.
"""

import ctypes
import fcntl
import os
import socket
import sys

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
NS_GET_USERNS = 0xB701  # ioctl on a namespace fd: the user namespace that owns it

libc = ctypes.CDLL(None, use_errno=True)


def setns(fd, kind):
    if libc.setns(fd, kind) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def listeners_in(pid, ports):
    net = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    owner = fcntl.ioctl(net, NS_GET_USERNS)
    setns(owner, CLONE_NEWUSER)  # gives the capabilities the next call needs, in that namespace only
    setns(net, CLONE_NEWNET)
    made = []
    for port in ports:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        made.append(listener)
    return made


def main(argv):
    channel = socket.socket(fileno=int(argv[1]))
    while True:
        request = channel.recv(4096)
        if not request:
            return
        child = os.fork()
        if child == 0:
            try:
                pid, *ports = (int(word) for word in request.split())
                made = listeners_in(pid, ports)
                socket.send_fds(channel, [b"ok"], [s.fileno() for s in made])
            except (OSError, ValueError) as exc:
                channel.send(f"error: {exc}".encode())
            os._exit(0)
        os.waitpid(child, 0)


if __name__ == "__main__":
    main(sys.argv)
