// SipMesh console: draws the view the gateway pushes (server-sent events on
// /console/events). No framework, no external asset; plots are SVG drawn here. Every
// value is put in the page as text (never as HTML), so nothing the mesh reports can
// inject markup. The gateway computes everything (gateway/console/model.py); this
// script only draws.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, String(value));
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fill(id, ...children) {
  const target = document.getElementById(id);
  target.replaceChildren(...children.flat());
  return target;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 120) return seconds + " s";
  if (seconds < 7200) return Math.floor(seconds / 60) + " min";
  return Math.floor(seconds / 3600) + " h";
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString();
}

// A small time-series plot: series = [[t, v0, v1, ...], ...], one line per value.
function plot(title, series, opts) {
  const width = 240, height = 60, pad = 2;
  const lines = opts.lines || 1;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  let max = opts.max || 0;
  for (const point of series) for (let i = 1; i <= lines; i++) max = Math.max(max, point[i]);
  max = max || 1;
  if (series.length > 0) {
    const t0 = series[0][0], t1 = series[series.length - 1][0];
    const span = Math.max(t1 - t0, 1);
    for (let i = 1; i <= lines; i++) {
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("class", "l" + (i - 1));
      line.setAttribute("points", series.map((p) => {
        const x = pad + ((p[0] - t0) / span) * (width - 2 * pad);
        const y = height - pad - (p[i] / max) * (height - 2 * pad);
        return x.toFixed(1) + "," + y.toFixed(1);
      }).join(" "));
      svg.append(line);
    }
  }
  return el("div", { class: "plot", "data-plot": opts.id || title },
    el("div", { class: "title" }, title), svg);
}

function renderServices(services) {
  const rows = [];
  for (const service of services) {
    for (const inst of service.instances) {
      rows.push(el("tr", { "data-instance": inst.id, "data-service": service.name },
        el("td", {}, service.name + (inst.node ? " node " + inst.node : "")),
        el("td", {}, inst.id),
        el("td", {}, inst.address),
        el("td", {}, inst.pid),
        el("td", {}, inst.ps_id === null ? "" : inst.ps_id),
        el("td", {}, inst.version),
        el("td", { class: "health-" + inst.health }, inst.health),
        el("td", {}, duration(inst.uptime))));
    }
  }
  fill("services-body", rows);
}

function renderClusters(clusters) {
  if (clusters.length === 0) {
    fill("clusters-body", el("p", { class: "empty" }, "no clustered service"));
    return;
  }
  fill("clusters-body", clusters.map((cluster) => {
    const ids = cluster.nodes.map((n) => n.id);
    const state = {};
    for (const link of cluster.links) state[link.from + ">" + link.to] = link;
    const head = el("tr", {}, el("th", {}, "seen from \\ to"),
      ids.map((id) => el("th", {}, "node " + id)));
    const rows = cluster.nodes.filter((n) => n.answering).map((from) =>
      el("tr", {}, el("th", {}, "node " + from.id), ids.map((to) => {
        if (to === from.id) return el("td", { class: "self" }, "-");
        const link = state[from.id + ">" + to];
        const text = link ? link.state + (link.via ? " via " + link.via : "") : "?";
        return el("td", {
          class: "link state-" + (link ? link.state : "unknown"),
          "data-cluster": cluster.id, "data-from": from.id, "data-to": to,
          "data-state": link ? link.state : "unknown",
          "data-via": link && link.via ? link.via : null,
        }, text);
      })));
    const nodes = el("ul", { class: "inline" }, cluster.nodes.map((n) =>
      el("li", { "data-node": n.id, "data-answering": n.answering ? "yes" : "no",
                 class: n.answering ? "" : "gone" },
        "node " + n.id + (n.answering ? "" : " (not answering)"))));
    const tags = el("ul", { class: "tags" }, cluster.tags.map((tag) =>
      el("li", { "data-tag": tag.tag, "data-holder": tag.holders.join(",") },
        el("strong", {}, tag.tag), " ",
        tag.holders.length ? "active on node " + tag.holders.join(", ")
                           : "no holder (takeover under way)",
        tag.backups.length ? "; backup: node " + tag.backups.join(", ") : "")));
    return el("div", { class: "cluster", "data-cluster": cluster.id },
      el("h3", {}, "cluster " + cluster.id + (cluster.service ? " (" + cluster.service + ")" : "")),
      nodes,
      el("table", { class: "links" }, el("thead", {}, head), el("tbody", {}, rows)),
      cluster.tags.length ? el("div", {}, el("h3", {}, "sharing tags"), tags) : null);
  }));
}

function renderLoad(load) {
  fill("load-body", load.map((proc) => plot(
    `${proc.name} (ps ${proc.ps_id}): ${proc.load} / ${proc.load1m} / ${proc.load10m}`,
    proc.series, { lines: 3, max: 100, id: "load-" + proc.ps_id })));
}

function renderRegistrations(regs) {
  fill("reg-users", String(regs.users));
  fill("reg-rate", String(regs.rate));
  fill("reg-plot",
    plot("registered users", regs.series, { lines: 1, id: "reg-users" }),
    plot("REGISTER/s", regs.series.map((p) => [p[0], p[2]]), { lines: 1, id: "reg-rate" }));
  fill("reg-nodes", regs.per_instance.map((n) =>
    el("li", {}, (n.node ? "node " + n.node : n.id) + ": " + n.users)));
}

function renderDialogs(dialogs) {
  const section = document.getElementById("dialogs");
  section.hidden = dialogs === null;
  if (dialogs === null) return;
  fill("dlg-active", String(dialogs.active));
  fill("dlg-plot", plot("active dialogs", dialogs.series, { lines: 1, id: "dialogs" }));
}

function renderEvents(events) {
  const top = events.rates.reduce((m, r) => Math.max(m, r.per_second), 0) || 1;
  if (events.rates.length === 0) {
    fill("event-rates", el("p", { class: "empty" }, "no event in the last seconds"));
  } else {
    fill("event-rates", events.rates.map((r) => {
      const bar = el("span", { class: "fill" });
      bar.style.width = Math.max(2, (r.per_second / top) * 200) + "px";
      return el("div", { class: "bar", "data-event": r.name },
        el("span", { class: "name" }, r.name), bar, el("span", {}, r.per_second + "/s"));
    }));
  }
  fill("recent-body", events.recent.map((e) => el("li", { "data-event": e.name },
    el("span", { class: "time" }, clock(e.time)), el("strong", {}, e.name), " ",
    Object.entries(e.params).map(([k, v]) => k + "=" + JSON.stringify(v)).join(" "),
    e.service ? " (" + e.service + ")" : "")));
}

function render(view) {
  renderServices(view.services);
  renderClusters(view.clusters);
  renderLoad(view.load);
  renderRegistrations(view.registrations);
  renderDialogs(view.dialogs);
  renderEvents(view.events);
  fill("updated", "updated " + clock(view.time));
  document.body.dataset.updated = String(view.time);
}

function status(state, text) {
  const badge = document.getElementById("status");
  badge.dataset.state = state;
  badge.textContent = text;
}

function connect() {
  const source = new EventSource("/console/events");
  source.addEventListener("open", () => status("live", "live"));
  source.addEventListener("view", (message) => {
    status("live", "live");
    render(JSON.parse(message.data));
  });
  // EventSource reconnects by itself (the stream asks for 1 s); say so meanwhile.
  source.addEventListener("error", () => status("offline", "reconnecting"));
}

document.addEventListener("DOMContentLoaded", connect);
