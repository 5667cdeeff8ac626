// A service's logs: the containers' lines live (server-sent events from a cursor: a dropped
// connection resumes where it stopped) with the filters `stackpad logs` has (text, stream,
// time range, how many lines), and the proxy's access log with its own (status such as 5xx,
// 404 or 500-599, slower than, path, time range).

import { AccessLogEntry, LogLine, Service, get } from "./api";
import { clear, h, nsTime } from "./dom";
import { form } from "./form";
import type { Cleanup } from "./main";

const MAX_LINES = 2000;

/** A `datetime-local` value (the user's clock) as RFC 3339, or nothing. */
function instant(local: string): string | undefined {
  if (!local) return undefined;
  const t = new Date(local);
  return Number.isNaN(t.getTime()) ? local : t.toISOString();
}

/** The query both logs share: text, time range and how many. */
function query(v: Record<string, string>): URLSearchParams {
  const p = new URLSearchParams({ limit: v.limit || "200" });
  if (v.q) p.set("q", v.q);
  const since = instant(v.since);
  const until = instant(v.until);
  if (since) p.set("since", since);
  if (until) p.set("until", until);
  return p;
}

const TIME = "Time range, lines";

export async function logsTab(body: HTMLElement, service: Service): Promise<Cleanup> {
  const pane = h("pre", { class: "log", tabindex: "0", "aria-label": "Container log", "aria-live": "polite" });
  const status = h("small", { class: "muted log-status", role: "status" }, "connecting…");
  let source: EventSource | null = null;
  let retry = 0;
  const addLine = (l: LogLine) => {
    const atEnd = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 4;
    pane.append(h("span", { class: l.stream === "stderr" ? "err" : "" }, `${nsTime(l.timestamp_ns)}  ${l.line}\n`));
    while (pane.childNodes.length > MAX_LINES) pane.firstChild?.remove();
    if (atEnd) pane.scrollTop = pane.scrollHeight;
  };
  const stop = () => {
    window.clearTimeout(retry);
    const s = source;
    source = null;
    s?.close();
  };
  // Follows from `cursor`; when the connection drops (a control restart), follows again from
  // the last line seen, so nothing is missed and nothing repeats.
  const follow = (cursor: string | undefined, p: URLSearchParams) => {
    stop();
    const q = new URLSearchParams(p);
    q.delete("limit");
    q.delete("since");
    if (cursor) q.set("cursor", cursor);
    const es = new EventSource(`/services/${service.id}/logs/follow?${q}`);
    source = es;
    let last = cursor;
    es.onopen = () => (status.textContent = "live");
    es.onmessage = (ev) => {
      const l = JSON.parse(ev.data) as LogLine;
      last = l.cursor;
      addLine(l);
    };
    es.onerror = () => {
      es.close();
      if (source !== es) return;
      status.textContent = "reconnecting…";
      retry = window.setTimeout(() => follow(last, p), 1000);
    };
  };
  // The newest lines first (newest first from the API), then, unless the range ends at a
  // time, follow from the newest one's cursor.
  const start = async (v: Record<string, string>) => {
    stop();
    const p = query(v);
    if (v.stream) p.set("stream", v.stream);
    const recent = await get<{ lines: LogLine[]; follow_cursor?: string }>(`/services/${service.id}/logs?${p}`);
    clear(pane);
    const lines = [...recent.lines].reverse();
    lines.forEach(addLine);
    pane.scrollTop = pane.scrollHeight;
    if (p.has("until")) {
      status.textContent = `${lines.length} lines, not live: the range ends at a time`;
      return;
    }
    status.textContent = "connecting…";
    follow(recent.follow_cursor ?? lines[lines.length - 1]?.cursor, p);
  };
  const filters = form(
    [
      { name: "q", label: "Text in the line", type: "search", placeholder: "error" },
      { name: "stream", label: "Stream", options: ["", "stdout", "stderr"], value: "" },
      { name: "since", label: "Since", type: "datetime-local", group: TIME },
      { name: "until", label: "Until (not live)", type: "datetime-local", group: TIME },
      { name: "limit", label: "Lines", type: "number", value: "200", hint: "1 to 1000", group: TIME },
    ],
    "Filter",
    start,
    { inline: true },
  );
  filters.setAttribute("role", "search");
  filters.classList.add("log-filters");

  const access = h("tbody", {});
  const accessNote = h("small", { class: "muted", role: "status" });
  const loadAccess = async (v: Record<string, string>) => {
    const p = query(v);
    if (v.status) p.set("status", v.status);
    if (v.min_duration_ms) p.set("min_duration_ms", v.min_duration_ms);
    const r = await get<{ requests: AccessLogEntry[] }>(`/services/${service.id}/access-logs?${p}`);
    clear(access);
    access.append(
      ...r.requests.map((a) =>
        h("tr", {}, h("td", {}, nsTime(a.timestamp_ns)), h("td", {}, a.method), h("td", { class: "mono clip" }, a.path), h("td", { class: `st st${String(a.status)[0]}` }, String(a.status)), h("td", { class: "num" }, `${a.duration_ms.toFixed(1)} ms`)),
      ),
    );
    if (!r.requests.length) access.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No request.")));
    accessNote.textContent = `${r.requests.length} requests, newest first.`;
  };
  const accessForm = form(
    [
      { name: "status", label: "Status", placeholder: "5xx, 404, 500-599", hint: "a class, a code, a range or a list" },
      { name: "min_duration_ms", label: "Slower than (ms)", type: "number", placeholder: "500" },
      { name: "q", label: "Path contains", type: "search", placeholder: "/api" },
      { name: "since", label: "Since", type: "datetime-local", group: TIME },
      { name: "until", label: "Until", type: "datetime-local", group: TIME },
      { name: "limit", label: "Requests", type: "number", value: "100", hint: "1 to 1000", group: TIME },
    ],
    "Show",
    loadAccess,
    { inline: true },
  );
  accessForm.classList.add("access-filters");
  body.append(
    h("section", {}, h("div", { class: "title" }, h("h2", {}, "Container log"), status), filters, pane),
    h(
      "section",
      {},
      h("div", { class: "title" }, h("h2", {}, "Requests"), accessNote),
      accessForm,
      h("table", { class: "list requests" }, h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Method"), h("th", {}, "Path"), h("th", {}, "Status"), h("th", {}, "Duration"))), access),
    ),
  );
  try {
    await start({ limit: "200" });
  } catch (e) {
    status.textContent = e instanceof Error ? e.message : String(e);
  }
  try {
    await loadAccess({ limit: "100" });
  } catch (e) {
    accessNote.textContent = e instanceof Error ? e.message : String(e);
  }
  return stop;
}
