// Node's ws client: sends one text message and reports what came back, as one JSON line.
// node ws_send.mjs URL SIZE  (ws is found through NODE_PATH: the tests install it in a directory of their own)
import { createRequire } from "node:module";
import { createHash, randomBytes } from "node:crypto";

const require = createRequire(import.meta.url);
const WebSocket = require("ws");
const [url, size] = [process.argv[2], Number(process.argv[3])];
const sent = randomBytes(size / 2).toString("hex");
// perMessageDeflate: offer compression (the default, said here for the reader); maxPayload 0: any size.
const ws = new WebSocket(url, { perMessageDeflate: true, maxPayload: 0 });
let report = null;
ws.on("open", () => ws.send(sent));
ws.on("message", (data, isBinary) => {
  const text = data.toString();
  report = {
    extensions: ws.extensions,
    same: !isBinary && text === sent,
    length: text.length,
    sha256: createHash("sha256").update(sent).digest("hex"),
  };
  ws.close(1000);
});
ws.on("close", (code, reason) => {
  console.log(JSON.stringify(report ?? { extensions: ws.extensions, code, reason: reason.toString() }));
});
ws.on("error", (error) => {
  console.log(JSON.stringify({ error: String(error) }));
  process.exit(1);
});
