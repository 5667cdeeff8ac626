// A service's traffic over the last hour, per minute, from the proxy's access log: requests
// per second by status class and p50/p95 latency, drawn with uPlot.

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { AccessLogEntry, Service, get } from "./api";
import { h } from "./dom";
import type { Cleanup } from "./main";

const WINDOW_S = 3600;
const BUCKET_S = 60;
const MAX_PAGES = 10;

interface Buckets {
  t: number[];
  byClass: number[][];
  p50: (number | null)[];
  p95: (number | null)[];
  total: number;
}

function quantile(sorted: number[], q: number): number | null {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

/** Per-minute buckets of `rows` over the window ending at `nowS`. */
export function bucket(rows: AccessLogEntry[], nowS: number): Buckets {
  const start = Math.floor((nowS - WINDOW_S) / BUCKET_S) * BUCKET_S;
  const n = Math.ceil((nowS - start) / BUCKET_S);
  const t = Array.from({ length: n }, (_, i) => start + i * BUCKET_S);
  const byClass = [0, 1, 2, 3].map(() => new Array<number>(n).fill(0));
  const durations = Array.from({ length: n }, () => [] as number[]);
  for (const r of rows) {
    const i = Math.floor((r.timestamp_ns / 1e9 - start) / BUCKET_S);
    if (i < 0 || i >= n) continue;
    const cls = Math.min(Math.max(Math.floor(r.status / 100) - 2, 0), 3);
    byClass[cls][i] += 1 / BUCKET_S;
    durations[i].push(r.duration_ms);
  }
  for (const d of durations) d.sort((a, b) => a - b);
  return {
    t,
    byClass,
    p50: durations.map((d) => quantile(d, 0.5)),
    p95: durations.map((d) => quantile(d, 0.95)),
    total: rows.length,
  };
}

async function load(service: Service): Promise<AccessLogEntry[]> {
  const since = new Date(Date.now() - WINDOW_S * 1000).toISOString();
  const rows: AccessLogEntry[] = [];
  let cursor: string | null = null;
  for (let i = 0; i < MAX_PAGES; i++) {
    const p = new URLSearchParams({ since, limit: "1000" });
    if (cursor) p.set("cursor", cursor);
    const page: { requests: AccessLogEntry[]; next_cursor: string | null } = await get(`/services/${service.id}/access-logs?${p}`);
    rows.push(...page.requests);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return rows;
}

function chart(el: HTMLElement, title: string, unit: string, data: uPlot.AlignedData, series: { label: string; cls: string }[], stacked: boolean): uPlot {
  const css = getComputedStyle(document.documentElement);
  const color = (name: string) => css.getPropertyValue(name).trim() || "#888";
  const width = Math.max(280, el.clientWidth);
  return new uPlot(
    {
      title,
      width,
      height: 220,
      scales: { x: { time: true } },
      axes: [
        { stroke: color("--muted"), grid: { stroke: color("--line") } },
        { stroke: color("--muted"), grid: { stroke: color("--line") }, label: unit },
      ],
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: color(`--${s.cls}`),
          fill: stacked ? color(`--${s.cls}`) + "33" : undefined,
          width: 2,
          spanGaps: !stacked,
        })),
      ],
    },
    data,
    el,
  );
}

export async function metricsTab(body: HTMLElement, service: Service): Promise<Cleanup> {
  const rps = h("div", { class: "chart", role: "img", "aria-label": "Requests per second by status class" });
  const lat = h("div", { class: "chart", role: "img", "aria-label": "Latency p50 and p95" });
  const note = h("p", { class: "muted" });
  body.append(h("section", {}, note, rps, lat));
  const charts: uPlot[] = [];
  const draw = async () => {
    const rows = await load(service);
    const b = bucket(rows, Date.now() / 1000);
    note.textContent = `${b.total} requests in the last hour, per minute, from the proxy's access log.`;
    const rpsData: uPlot.AlignedData = [b.t, ...b.byClass];
    const latData: uPlot.AlignedData = [b.t, b.p50, b.p95];
    if (charts.length) {
      charts[0].setData(rpsData);
      charts[1].setData(latData);
      return;
    }
    charts.push(
      chart(rps, "Requests/s", "req/s", rpsData, [
        { label: "2xx", cls: "ok" },
        { label: "3xx", cls: "info" },
        { label: "4xx", cls: "warn" },
        { label: "5xx", cls: "bad" },
      ], true),
      chart(lat, "Latency", "ms", latData, [
        { label: "p50", cls: "info" },
        { label: "p95", cls: "warn" },
      ], false),
    );
  };
  await draw();
  const timer = window.setInterval(() => void draw().catch(() => {}), 15000);
  const resize = () => charts.forEach((c, i) => c.setSize({ width: Math.max(280, [rps, lat][i].clientWidth), height: 220 }));
  window.addEventListener("resize", resize);
  return () => {
    window.clearInterval(timer);
    window.removeEventListener("resize", resize);
    charts.forEach((c) => c.destroy());
  };
}
