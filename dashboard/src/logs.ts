// A service's logs: the containers' lines live (server-sent events from a cursor: a dropped
// connection resumes where it stopped) with a search, and the proxy's access log with filters.

import { AccessLogEntry, LogLine, Service, get } from "./api";
import { clear, h, nsTime } from "./dom";
import type { Cleanup } from "./main";

const MAX_LINES = 2000;

export async function logsTab(body: HTMLElement, service: Service): Promise<Cleanup> {
  const pane = h("pre", { class: "log", tabindex: "0", "aria-label": "Container log", "aria-live": "polite" });
  const status = h("small", { class: "muted" }, "connecting…");
  let source: EventSource | null = null;
  let filter = "";
  const addLine = (l: LogLine) => {
    const atEnd = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 4;
    pane.append(h("span", { class: l.stream === "stderr" ? "err" : "" }, `${nsTime(l.timestamp_ns)}  ${l.line}\n`));
    while (pane.childNodes.length > MAX_LINES) pane.firstChild?.remove();
    if (atEnd) pane.scrollTop = pane.scrollHeight;
  };
  const start = async () => {
    source?.close();
    clear(pane);
    const q = filter ? `&q=${encodeURIComponent(filter)}` : "";
    // The last lines first (newest first from the API), then follow from the newest one's cursor.
    const recent = await get<{ lines: LogLine[]; follow_cursor?: string }>(`/services/${service.id}/logs?limit=200${q}`);
    const lines = [...recent.lines].reverse();
    lines.forEach(addLine);
    follow(recent.follow_cursor ?? lines[lines.length - 1]?.cursor, q);
  };
  // Follows from `cursor`; when the connection drops (a control restart), follows again from
  // the last line seen, so nothing is missed and nothing repeats.
  let retry = 0;
  const follow = (cursor: string | undefined, q: string) => {
    source?.close();
    const es = new EventSource(`/services/${service.id}/logs/follow?${cursor ? `cursor=${encodeURIComponent(cursor)}` : ""}${q}`);
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
      retry = window.setTimeout(() => follow(last, q), 1000);
    };
  };
  const search = h("input", { type: "search", placeholder: "text in the line", "aria-label": "Filter the log" });
  const searchForm = h("form", { class: "form inline", role: "search" }, search, h("button", { type: "submit" }, "Filter"), status);
  searchForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    filter = search.value.trim();
    void start().catch((e) => (status.textContent = String(e.message ?? e)));
  });
  const access = h("tbody", {});
  const accessStatus = h("select", { "aria-label": "Status" }, ["", "2xx", "3xx", "4xx", "5xx"].map((s) => h("option", { value: s }, s || "any status")));
  const minMs = h("input", { type: "number", min: "0", placeholder: "min ms", "aria-label": "Slower than (ms)" });
  const accessErr = h("span", { class: "field-error", role: "alert", hidden: true });
  const loadAccess = async () => {
    const p = new URLSearchParams({ limit: "100" });
    if (accessStatus.value) p.set("status", accessStatus.value);
    if (minMs.value) p.set("min_duration_ms", minMs.value);
    accessErr.hidden = true;
    try {
      const r = await get<{ requests: AccessLogEntry[] }>(`/services/${service.id}/access-logs?${p}`);
      clear(access);
      access.append(
        ...r.requests.map((a) =>
          h("tr", {}, h("td", {}, nsTime(a.timestamp_ns)), h("td", {}, a.method), h("td", { class: "mono clip" }, a.path), h("td", { class: `st st${String(a.status)[0]}` }, String(a.status)), h("td", {}, `${a.duration_ms.toFixed(1)} ms`)),
        ),
      );
      if (!r.requests.length) access.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No request.")));
    } catch (e) {
      accessErr.textContent = e instanceof Error ? e.message : String(e);
      accessErr.hidden = false;
    }
  };
  const accessForm = h("form", { class: "form inline" }, accessStatus, minMs, h("button", { type: "submit" }, "Show"), accessErr);
  accessForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void loadAccess();
  });
  body.append(
    h("section", {}, h("h2", {}, "Container log"), searchForm, pane),
    h(
      "section",
      {},
      h("h2", {}, "Requests"),
      accessForm,
      h("table", { class: "list" }, h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Method"), h("th", {}, "Path"), h("th", {}, "Status"), h("th", {}, "Duration"))), access),
    ),
  );
  try {
    await start();
  } catch (e) {
    status.textContent = e instanceof Error ? e.message : String(e);
  }
  await loadAccess();
  return () => {
    window.clearTimeout(retry);
    const s = source;
    source = null;
    s?.close();
  };
}
