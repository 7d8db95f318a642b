// Runs one Lambda handler for the local regions: `node node_bootstrap.mjs`.
// Frames on stdin/stdout: a 4-byte big-endian length, then JSON (see python_bootstrap.py).
// The handler's console output goes to stderr; CommonJS and ES modules, async and callback handlers.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const writeFrame = (obj) => {
  const body = Buffer.from(JSON.stringify(obj));
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  fs.writeSync(1, Buffer.concat([head, body]));
};
// console.log and process.stdout.write land in the log, never in the frames.
process.stdout.write = process.stderr.write.bind(process.stderr);

const errorOf = (type, message, stack) => ({ errorType: type, errorMessage: message, stackTrace: stack || [] });
const report = (err) => {
  process.stderr.write(`ERROR\t${err.errorType}: ${err.errorMessage}\n`);
  for (const line of err.stackTrace) process.stderr.write(`${line}\n`);
};
const toError = (e) => {
  if (e instanceof Error) {
    return errorOf(e.name || "Error", e.message, (e.stack || "").split("\n").slice(1).map((s) => s.trim()));
  }
  return errorOf("Error", typeof e === "string" ? e : JSON.stringify(e));
};

async function loadHandler() {
  const spec = process.env._HANDLER || "";
  const root = process.env.LAMBDA_TASK_ROOT || process.cwd();
  const dot = spec.lastIndexOf(".");
  if (dot <= 0 || dot === spec.length - 1) {
    return [null, errorOf("Runtime.MalformedHandlerName", `Bad handler ${spec}`)];
  }
  const modulePath = spec.slice(0, dot);
  const func = spec.slice(dot + 1);
  const candidates = [".mjs", ".cjs", ".js"].map((ext) => path.join(root, modulePath + ext));
  const file = candidates.find((f) => fs.existsSync(f));
  if (!file) {
    return [null, errorOf("Runtime.ImportModuleError", `Error: Cannot find module '${modulePath}'`)];
  }
  let mod;
  try {
    mod = await import(pathToFileURL(file).href);
  } catch (e) {
    const err = toError(e);
    const kind = e instanceof SyntaxError ? "Runtime.UserCodeSyntaxError" : "Runtime.ImportModuleError";
    return [null, errorOf(kind, `${err.errorType}: ${err.errorMessage}`, err.stackTrace)];
  }
  let handler = mod[func];
  if (typeof handler !== "function" && mod.default) handler = mod.default[func];
  if (typeof handler !== "function") {
    return [null, errorOf("Runtime.HandlerNotFound", `${path.basename(modulePath)}.${func} is undefined or not exported`)];
  }
  return [handler, null];
}

function contextFor(data) {
  const env = process.env;
  return {
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    invokedFunctionArn: data.invoked_function_arn,
    awsRequestId: data.aws_request_id,
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(0, Math.floor(data.deadline_ms - Date.now())),
  };
}

function invoke(handler, event, context) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const done = (err, value) => {
      if (settled) return;
      settled = true;
      if (err !== null && err !== undefined) reject(err);
      else resolve(value);
    };
    context.done = done;
    context.succeed = (v) => done(null, v);
    context.fail = (e) => done(e ?? new Error("failed"));
    try {
      const out = handler(event, context, done);
      if (out && typeof out.then === "function") out.then((v) => done(null, v), (e) => done(e ?? new Error("rejected")));
      else if (handler.length < 3) done(null, out);
    } catch (e) {
      done(e);
    }
  });
}

const [handler, initError] = await loadHandler();
if (initError) {
  report(initError);
  writeFrame({ init_error: initError });
} else {
  writeFrame({ ready: true });
}

let buffer = Buffer.alloc(0);
let busy = Promise.resolve();
process.stdin.on("data", (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  while (buffer.length >= 4) {
    const size = buffer.readUInt32BE(0);
    if (buffer.length < 4 + size) break;
    const request = JSON.parse(buffer.subarray(4, 4 + size).toString());
    buffer = buffer.subarray(4 + size);
    busy = busy.then(async () => {
      if (initError) {
        report(initError);
        writeFrame({ error: initError });
        return;
      }
      try {
        const result = await invoke(handler, request.event, contextFor(request.context));
        writeFrame({ result: result === undefined ? null : result });
      } catch (e) {
        const err = toError(e);
        report(err);
        writeFrame({ error: err });
      }
    });
  }
});
process.stdin.on("end", () => process.exit(0));
