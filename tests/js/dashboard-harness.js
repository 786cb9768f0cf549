// Runs the dashboard's own script (balancer/src/dashboard.html) under Node.js
// with the little of the DOM it uses, against /api/status answers a test
// gives, and prints what each scenario drew as JSON. tests/tests/dashboard.rs
// runs it: `node dashboard-harness.js SCRIPT STATUS [SCENARIO,...]`, the
// scenarios (all, if none are named) made from a three-node cluster's answer.
"use strict";

const fs = require("fs");
const [script, statusFile, only] = process.argv.slice(2);

class Node {
  constructor(tag) {
    Object.assign(this, { tag, textContent: "", style: {}, children: [], className: "", title: "" });
  }
  appendChild(child) { this.children.push(child); return child; }
  append(...children) { this.children.push(...children); }
  replaceChildren(...children) { this.children = children; }
  setAttribute(name, value) { this[name] = value; }
}
const elements = {};
globalThis.Node = Node;
globalThis.document = {
  getElementById: (id) => (elements[id] ??= new Node("#" + id)),
  createElement: (tag) => new Node(tag),
  createTextNode: (text) => Object.assign(new Node("#text"), { textContent: text }),
};
// The next answer /api/status gives; each scenario sets it, then polls once.
let answer = () => { throw new Error("no answer set"); };
globalThis.fetch = async () => answer();
globalThis.setTimeout = () => {};

const text = (node) => [node.textContent, ...node.children.map(text)].filter((t) => t !== "").join(" ");
const classed = (node, name) =>
  node.className === name ? [node] : node.children.flatMap((child) => classed(child, name));
const drawn = () => ({
  banner: { shown: elements.banner.style.display, text: text(elements.banner) },
  rps: text(elements.rps),
  page: elements.page.className,
  head: document.getElementById("head").className,
  retries: text(document.getElementById("retries")),
  tiles: elements.tiles.children.map(text),
  tileRps: classed(elements.tiles, "rps").map(text),
  bars: classed(elements.tiles, "bar").map((bar) => bar.children[0].style.width),
  quorum: text(elements.quorum),
  replication: text(elements.replication),
  links: text(elements.links),
  events: text(elements.events),
});

// The page's script, as the browser runs it, but for its last line, which
// starts the polling: here each scenario polls once.
const source = fs.readFileSync(script, "utf8");
if (!/^poll\(\);$/m.test(source)) throw new Error("the script no longer ends with `poll();`");
require("vm").runInThisContext(source.replace(/^poll\(\);$/m, ""), { filename: "dashboard.html" });

const real = JSON.parse(fs.readFileSync(statusFile, "utf8"));
const copy = () => JSON.parse(JSON.stringify(real));
const view = (status, name) => status.nodes.find((n) => n.backend === name).view;
// What `seenBy` says of member `name`, and of its link to it, as the
// balancer's /api/status says it (balancer/src/dashboard.rs, `link_row`).
const setState = (status, seenBy, name, state) => {
  view(status, seenBy).status.members.find((m) => m.name === name).state = state;
  const link = status.links.find((l) => l.from === seenBy && l.to === name);
  if (link && link.version !== null) {
    Object.assign(link, { down: state !== "alive", far_end: state === "alive" ? null : state });
  }
};

const scenarios = {
  // The cluster as it is.
  healthy: () => real,
  // n1 and n3 cannot reach each other (fault n1 --drop-peer n3); n2 sees both.
  // Each end counts the keys the other cannot get as short of a copy.
  cut: () => {
    const status = copy();
    setState(status, "n1", "n3", "dead");
    setState(status, "n3", "n1", "dead");
    view(status, "n1").status.under_replicated = 5;
    view(status, "n3").status.under_replicated = 5;
    return status;
  },
  // n1 cut off from both others: they see it dead, it sees them dead.
  partition: () => {
    const status = copy();
    for (const other of ["n2", "n3"]) {
      setState(status, "n1", other, "dead");
      setState(status, other, "n1", "dead");
      view(status, other).status.under_replicated = 5;
    }
    view(status, "n1").status.under_replicated = 5;
    return status;
  },
  // Every node cut off from every other: each sees the rest dead, and
  // serves (no other node's word makes any of them alive).
  isolated: () => {
    const status = copy();
    for (const by of ["n1", "n2", "n3"]) {
      for (const other of ["n1", "n2", "n3"].filter((n) => n !== by)) setState(status, by, other, "dead");
      view(status, by).status.under_replicated = 5;
    }
    return status;
  },
  // n1 misses n3's probe answers for a moment (n3 slowed by a fault): its
  // link to n3 is its last session, and n3 only suspect, not down.
  suspect: () => {
    const status = copy();
    setState(status, "n1", "n3", "suspect");
    view(status, "n1").status.under_replicated = 2;
    return status;
  },
  // n3 paused by a fault (fault n3 --pause): its probes wait, so the others
  // find it suspect and count its keys short of their third copy, while its
  // own view still comes (Admin calls are not faulted). (One frozen with
  // SIGSTOP or `docker pause` gives no view: in a cluster of three, the page
  // then says only two nodes are alive.)
  suspectToAll: () => {
    const status = copy();
    for (const by of ["n1", "n2"]) {
      setState(status, by, "n3", "suspect");
      view(status, by).status.under_replicated = 6;
    }
    return status;
  },
  // A balancer whose --nodes-dns finds no node (none up yet), the one way
  // it lists none: --nodes are listed from the start.
  noNodes: () => {
    const status = copy();
    Object.assign(status, { nodes: [], links: status.links.filter((l) => l.from === "clients") });
    status.balancer.backends = [];
    return status;
  },
  // A fault injected into n2 (clusterlab fault n2 --latency 300ms), and
  // n3's store in trouble.
  faulted: () => {
    const status = copy();
    view(status, "n2").status.fault = "latency 300ms";
    view(status, "n3").status.store = "takes no more writes: an fsync of /data/clusterlab.redb failed";
    // The copies n3 cannot take.
    for (const by of ["n1", "n2"]) view(status, by).status.under_replicated = 4;
    return status;
  },
  // n3 killed: ejected, no view of its own, dead to the others, and each
  // key short of its third copy.
  killed: () => {
    const status = copy();
    status.balancer.backends.find((b) => b.name === "n3").health = "ejected";
    view(status, "n3").status = undefined;
    view(status, "n3").error = "cannot reach n3";
    for (const by of ["n1", "n2"]) {
      setState(status, by, "n3", "dead");
      view(status, by).status.under_replicated = 30;
    }
    return status;
  },
  // n3 dead since before the balancer started: the balancer never heard its
  // name and lists it, waiting, by its address; n1 and n2 know it as n3.
  deadBeforeStart: () => {
    const status = copy();
    const n3 = status.balancer.backends.find((b) => b.name === "n3");
    Object.assign(n3, { name: n3.addr, health: "waiting", reason: "health check failed: cannot reach it" });
    const own = status.nodes.find((n) => n.backend === "n3");
    Object.assign(own, { backend: n3.addr, view: { error: "cannot reach it" } });
    for (const by of ["n1", "n2"]) setState(status, by, "n3", "dead");
    return status;
  },
};

(async () => {
  const out = {};
  const wanted = ([name]) => !only || only.split(",").includes(name);
  for (const [name, make] of Object.entries(scenarios).filter(wanted)) {
    const status = make();
    answer = async () => ({ ok: true, status: 200, json: async () => status });
    await poll();
    out[name] = drawn();
  }
  // A paused balancer takes the connection and never answers.
  answer = async () => { throw Object.assign(new Error("signal timed out"), { name: "TimeoutError" }); };
  await poll();
  out.paused = drawn();
  // An error page, from a proxy in front of a balancer that is gone.
  answer = async () => ({ ok: false, status: 502, json: async () => { throw new Error("not JSON"); } });
  await poll();
  out.failing = drawn();
  // Another program on the balancer's port answers with its own page.
  const notJson = `Unexpected token '<', "<!doctype "... is not valid JSON`;
  answer = async () => ({ ok: true, status: 200, json: async () => { throw new SyntaxError(notJson); } });
  await poll();
  out.notStatus = drawn();
  // Back: two answers counted 1.5 s apart by the balancer, 300 requests
  // between them, whenever they arrive, all to n1, which is named
  // `constructor` here: a name a node may take, and a plain object's key.
  for (const [at, more] of [[0, 0], [1500, 300]]) {
    const status = copy();
    status.at_unix_ms += at;
    status.balancer.requests += more;
    const n1 = status.balancer.backends.find((b) => b.name === "n1");
    Object.assign(n1, { name: "constructor", requests: n1.requests + more });
    status.nodes.find((n) => n.backend === "n1").backend = "constructor";
    answer = async () => ({ ok: true, status: 200, json: async () => status });
    await poll();
    // The first answer back has nothing to compare with: no rate yet.
    if (at === 0) out.back = drawn();
  }
  out.rates = drawn();
  // n1 under its own name again: nothing counted under it to compare with.
  const renamed = copy();
  renamed.at_unix_ms += 3000;
  renamed.balancer.requests += 300; // the balancer's count does not go back
  answer = async () => ({ ok: true, status: 200, json: async () => renamed });
  await poll();
  out.renamed = drawn();
  // Restarted between two answers: it counts from zero again.
  const restarted = copy();
  restarted.at_unix_ms += 4000;
  restarted.balancer.requests = 0;
  for (const b of restarted.balancer.backends) b.requests = 0;
  answer = async () => ({ ok: true, status: 200, json: async () => restarted });
  await poll();
  out.restarted = drawn();
  process.stdout.write(JSON.stringify(out));
})().catch((e) => {
  process.stderr.write(String(e && e.stack || e));
  process.exit(1);
});
