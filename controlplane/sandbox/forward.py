"""The network forwarder that runs INSIDE a sandbox with network access (standalone: the standard
library only, nothing of the project; the sandbox copies this file in and runs it with the system's
Python).

The sandbox has its own network namespace with nothing but loopback in it. This program listens
on 127.0.0.1 inside it: on the proxy port (``HTTP_PROXY``/``HTTPS_PROXY`` point there) and on each
host loopback port the sandbox may reach. Every connection it accepts is passed, with one header
line saying which of them it came in on, to the Unix socket of the relay the worker runs outside;
the relay decides where it may go. Nothing here is trusted: code in the sandbox may kill or replace
this program, and gains nothing by it.

Usage: ``forward.py SOCKET PROXY_PORT PORT,PORT,... LIMITS -- COMMAND ARGS...``. It sets the
sandbox's rlimits (LIMITS: ``nofile=4096,nproc=1040,...``, as prlimit's long options, so the
sandbox needs no prlimit in front of it), binds its listeners, leaves a background copy of itself
serving them, and becomes COMMAND (exec), so COMMAND keeps the sandbox's stdin, stdout and exit
status. What the command waits for is kept small: threading is imported after the fork.
"""

import os
import resource
import socket
import sys

CHUNK = 65536


def pump(src, dst):
    try:
        while True:
            data = src.recv(CHUNK)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
        try:
            sock.shutdown(how)
        except OSError:
            pass


def serve_one(conn, path, tag):
    import threading

    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
        upstream.sendall(tag)
    except OSError:
        conn.close()
        upstream.close()
        return
    back = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
    back.start()
    pump(conn, upstream)
    back.join()
    conn.close()
    upstream.close()


def accept_loop(listener, path, tag):
    import threading

    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            continue
        threading.Thread(target=serve_one, args=(conn, path, tag), daemon=True).start()


def main(argv):
    path, proxy_port, ports = argv[1], int(argv[2]), [int(p) for p in argv[3].split(",") if p]
    for item in argv[4].split(","):
        if item:
            name, value = item.split("=")
            limit = int(value)
            resource.setrlimit(getattr(resource, f"RLIMIT_{name.upper()}"), (limit, limit))
    command = argv[6:]
    listeners = []
    for port, tag in [(proxy_port, b"PROXY\n")] + [(p, b"PORT %d\n" % p) for p in ports]:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        listeners.append((listener, tag))
    if os.fork() == 0:
        # The server: off the command's stdin and stdout, so they close when the command ends.
        import threading

        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        threads = [
            threading.Thread(target=accept_loop, args=(listener, path, tag), daemon=True)
            for listener, tag in listeners
        ]
        for thread in threads:
            thread.start()
        threads[0].join()
        os._exit(0)
    for listener, _ in listeners:
        listener.close()  # the server holds them; the command must not inherit them
    os.execvp(command[0], command)  # noqa: S606 - the sandboxed command, by design


if __name__ == "__main__":
    main(sys.argv)
