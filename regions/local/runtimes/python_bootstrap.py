"""Runs one Lambda handler for the local regions: ``python3 -S python_bootstrap.py``.

Frames on stdin/stdout: a 4-byte big-endian length, then JSON. First frame out: ``{"ready": true}``
or ``{"init_error": {...}}``. Each frame in: ``{"event", "context"}``; each frame out: ``{"result"}``
or ``{"error": {"errorType", "errorMessage", "stackTrace"}}``. The handler's prints and tracebacks go
to stderr (stdout carries frames only). Kept to the standard library so a worker starts fast.
"""

import importlib
import json
import os
import struct
import sys
import time
import traceback

PROTO_IN = os.fdopen(os.dup(0), "rb", buffering=0)
PROTO_OUT = os.fdopen(os.dup(1), "wb", buffering=0)
_devnull = os.open(os.devnull, os.O_RDONLY)
os.dup2(_devnull, 0)
os.dup2(2, 1)  # print() goes where the runtime's log goes
sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)


def send(obj):
    data = json.dumps(obj, separators=(",", ":"), default=str).encode()
    PROTO_OUT.write(struct.pack(">I", len(data)) + data)


def read_exact(n):
    chunks, left = [], n
    while left:
        chunk = PROTO_IN.read(left)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def error(kind, message, stack=None):
    return {"errorType": kind, "errorMessage": message, "stackTrace": stack or []}


def report(err):
    # As the managed runtime logs an error: one line, then the stack.
    print(f"[ERROR] {err['errorType']}: {err['errorMessage']}", file=sys.stderr)
    for line in err["stackTrace"]:
        print(line.rstrip("\n"), file=sys.stderr)


class Context:
    def __init__(self, data):
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.invoked_function_arn = data.get("invoked_function_arn", "")
        self.aws_request_id = data.get("aws_request_id", "")
        self.identity = None
        self.client_context = None
        self._deadline_ms = data.get("deadline_ms", 0)

    def get_remaining_time_in_millis(self):
        return max(0, int(self._deadline_ms - time.time() * 1000))


def load_handler():
    spec = os.environ.get("_HANDLER", "")
    root = os.environ.get("LAMBDA_TASK_ROOT", os.getcwd())
    sys.path.insert(0, root)
    module_path, _, func = spec.rpartition(".")
    if not module_path or not func:
        return None, error(
            "Runtime.MalformedHandlerName", f"Bad handler '{spec}': not enough values to unpack"
        )
    name = module_path.replace("/", ".")
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        return None, error("Runtime.ImportModuleError", f"Unable to import module '{module_path}': {exc}")
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        stack = traceback.format_exception(type(exc), exc, exc.__traceback__)
        kind = "Runtime.UserCodeSyntaxError" if isinstance(exc, SyntaxError) else "Runtime.ImportModuleError"
        return None, error(kind, f"Unable to import module '{module_path}': {exc}", stack)
    handler = getattr(module, func, None)
    if handler is None:
        return None, error("Runtime.HandlerNotFound", f"Handler '{func}' missing on module '{module_path}'")
    return handler, None


def main():
    handler, init_error = load_handler()
    if init_error:
        report(init_error)
        send({"init_error": init_error})
    else:
        send({"ready": True})
    while True:
        try:
            (size,) = struct.unpack(">I", read_exact(4))
            request = json.loads(read_exact(size))
        except EOFError:
            return
        if init_error:
            report(init_error)
            send({"error": init_error})
            continue
        try:
            result = handler(request["event"], Context(request["context"]))
            try:
                data = json.dumps({"result": result}, separators=(",", ":"))
            except (TypeError, ValueError) as exc:
                err = error("Runtime.MarshalError", f"Unable to marshal response: {exc}")
                report(err)
                send({"error": err})
                continue
            PROTO_OUT.write(struct.pack(">I", len(data)) + data.encode())
        except Exception as exc:  # noqa: BLE001 - the handler's error is the invocation's answer
            stack = traceback.format_tb(exc.__traceback__)[1:]
            err = error(type(exc).__name__, str(exc), stack)
            report(err)
            send({"error": err})
        sys.stdout.flush()


if __name__ == "__main__":
    main()
