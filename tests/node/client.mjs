// A Node.js gRPC client of the Switchyard broker: @grpc/grpc-js with the
// stubs @grpc/proto-loader builds from proto/switchyard/v1/broker.proto,
// over the broker's Unix socket. tests/python/test_node_client.py runs it
// against a real broker and a real service of simulated devices.
//
// Usage: node client.mjs SOCKET [HOST PORT FINGERPRINT USERNAME]
// (the password comes from $SWITCHYARD_PASSWORD, never from argv).
// Without a service it makes only the login-less call (Status). With one,
// it opens a session, connects to the service, lists its inventory, runs
// `show version` on the first device and prints what it saw as one JSON
// line on stdout. Any failure exits non-zero with the gRPC error on stderr.

import path from "node:path";
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const here = path.dirname(fileURLToPath(import.meta.url));
const protoDir = path.resolve(here, "..", "..", "proto");
const definition = protoLoader.loadSync("switchyard/v1/broker.proto", {
  includeDirs: [protoDir],
  keepCase: true, // field names as in the .proto (session_id, not sessionId)
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: true,
  oneofs: true, // event.event names which member of a oneof is set
});
const { Broker } = grpc.loadPackageDefinition(definition).switchyard.v1;

const [socket, host, port, fingerprint, username] = process.argv.slice(2);
if (!socket) {
  console.error("usage: node client.mjs SOCKET [HOST PORT FINGERPRINT USERNAME]");
  process.exit(2);
}

// The broker's HTTP/2 stack refuses a socket path as the `:authority`.
// grpc-js already sends "localhost" for unix: targets; naming it keeps a
// client correct whatever its gRPC library's default. With
// $SWITCHYARD_NODE_DEFAULT_AUTHORITY=1 the library's default is used (the
// test checks it works too).
const options =
  process.env.SWITCHYARD_NODE_DEFAULT_AUTHORITY === "1"
    ? {}
    : { "grpc.default_authority": "localhost" };
const client = new Broker(`unix:${socket}`, grpc.credentials.createInsecure(), options);

const deadline = (seconds) => new Date(Date.now() + seconds * 1000);
const call = (method, request, seconds = 30) =>
  new Promise((resolve, reject) =>
    client[method](request, { deadline: deadline(seconds) }, (err, reply) =>
      err ? reject(err) : resolve(reply),
    ),
  );

// A server stream read to its end, bounded by a deadline.
const collect = (method, request, seconds = 60) =>
  new Promise((resolve, reject) => {
    const events = [];
    const stream = client[method](request, { deadline: deadline(seconds) });
    stream.on("data", (event) => events.push(event));
    stream.on("error", reject);
    stream.on("end", () => resolve(events));
  });

async function main() {
  const result = {};
  const before = await call("Status", {}, 10);
  result.version = before.version;
  result.sessions_before = before.sessions.length;
  if (!host) {
    return result;
  }

  const { session_id } = await call("OpenSession", { client_name: "node" }, 10);
  // The session lives as long as this stream is open.
  const attach = client.Attach({ session_id });
  const attached = new Promise((resolve, reject) => {
    attach.once("data", (event) => resolve(event));
    attach.once("error", reject);
  });
  const first = await attached;
  attach.on("error", () => {}); // the cancel at the end ends it with CANCELLED
  result.attached = first.event === "attached" && first.attached.session_id === session_id;

  const service = await call("ServiceDirect", {
    session_id,
    username,
    host,
    port: Number(port),
    password: process.env.SWITCHYARD_PASSWORD ?? "",
    fingerprint,
  });
  result.service_name = service.service_name;
  const ref = { session_id, service_id: service.service_id };

  const inventory = await call("Inventory", { service: ref }, 10);
  result.devices = inventory.devices.map((d) => d.name);

  const events = await collect("Exec", {
    service: ref,
    devices: [result.devices[0]],
    commands: ["show version"],
  });
  const chunks = [];
  for (const event of events) {
    if (event.event === "output") {
      chunks.push(event.output.data);
    } else if (event.event === "device_result") {
      result.device_error = event.device_result.error;
      for (const command of event.device_result.commands) {
        chunks.push(command.output);
        result.exit_status = command.exit_status ?? null;
      }
    } else if (event.event === "summary") {
      result.summary = event.summary.status;
    }
  }
  result.output = Buffer.concat(chunks).toString("utf8");

  const after = await call("Status", {}, 10);
  result.sessions_after = after.sessions.map((s) => s.session_id === session_id);
  result.link_connects = after.links.map((l) => Number(l.connects));

  attach.cancel();
  return result;
}

main()
  .then((result) => {
    console.log(JSON.stringify(result));
    client.close();
  })
  .catch((err) => {
    console.error(`grpc error: code=${err.code} ${err.details ?? err.message}`);
    client.close();
    process.exit(1);
  });
