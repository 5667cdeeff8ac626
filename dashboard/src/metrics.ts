// A service over the last hour, drawn with uPlot: its traffic per minute from the proxy's
// access log (requests per second by status class, p50/p95 latency), and its containers' CPU,
// memory and network from the node agents' samples (GET /services/{id}/metrics).

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

export interface UsagePoint {
  t: number;
  cpu_cores: number;
  memory_bytes: number;
  memory_limit_bytes: number;
  rx_bytes_per_second: number;
  tx_bytes_per_second: number;
  containers: number;
}

interface Usage {
  since_ns: number;
  until_ns: number;
  step_seconds: number;
  points: UsagePoint[];
}

/** The usage points on a full time axis (buckets without samples are gaps). */
export function usageSeries(u: Usage): { t: number[]; cpu: (number | null)[]; mem: (number | null)[]; limit: (number | null)[]; rx: (number | null)[]; tx: (number | null)[]; n: number } {
  const step = u.step_seconds;
  const start = Math.floor(u.since_ns / 1e9 / step) * step;
  const end = Math.floor(u.until_ns / 1e9 / step) * step;
  const at = new Map(u.points.map((p) => [p.t, p]));
  const t: number[] = [];
  for (let x = start; x <= end; x += step) t.push(x);
  const col = (f: (p: UsagePoint) => number | null) => t.map((x) => (at.has(x) ? f(at.get(x)!) : null));
  const MiB = 2 ** 20;
  return {
    t,
    cpu: col((p) => p.cpu_cores),
    mem: col((p) => p.memory_bytes / MiB),
    limit: col((p) => (p.memory_limit_bytes ? p.memory_limit_bytes / MiB : null)),
    rx: col((p) => p.rx_bytes_per_second / 1024),
    tx: col((p) => p.tx_bytes_per_second / 1024),
    n: u.points.length,
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
  const cpu = h("div", { class: "chart", id: "chart-cpu", role: "img", "aria-label": "CPU in cores" });
  const mem = h("div", { class: "chart", id: "chart-memory", role: "img", "aria-label": "Memory in MiB and its limit" });
  const net = h("div", { class: "chart", id: "chart-network", role: "img", "aria-label": "Network in and out, KiB/s" });
  // Their text comes with the data; a line is kept for it meanwhile (nothing moves).
  const note = h("p", { class: "muted" }, "Loading the last hour…");
  const usageNote = h("p", { class: "muted" }, "Loading…");
  body.append(h("section", {}, note, rps, lat), h("section", {}, h("h2", {}, "Resources"), usageNote, cpu, mem, net));
  const charts: uPlot[] = [];
  const boxes = [rps, lat, cpu, mem, net];
  // The data last drawn, so a change of the system's colour scheme redraws the charts in the
  // new colours at once (their colours are read from the CSS variables when they are made).
  let drawn: uPlot.AlignedData[] = [];
  const make = (data: uPlot.AlignedData[]) => {
    const [rpsData, latData, cpuData, memData, netData] = data;
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
      chart(cpu, "CPU", "cores", cpuData, [{ label: "cores", cls: "info" }], false),
      chart(mem, "Memory", "MiB", memData, [
        { label: "in use", cls: "ok" },
        { label: "limit", cls: "bad" },
      ], false),
      chart(net, "Network", "KiB/s", netData, [
        { label: "in", cls: "info" },
        { label: "out", cls: "warn" },
      ], false),
    );
  };
  const draw = async () => {
    const since = new Date(Date.now() - WINDOW_S * 1000).toISOString();
    const [rows, usage] = await Promise.all([load(service), get<Usage>(`/services/${service.id}/metrics?since=${encodeURIComponent(since)}`)]);
    const b = bucket(rows, Date.now() / 1000);
    note.textContent = `${b.total} requests in the last hour, per minute, from the proxy's access log.`;
    const u = usageSeries(usage);
    usageNote.textContent = `${u.n} samples of ${usage.step_seconds} s from the nodes running the service's containers.`;
    for (const box of [cpu, mem, net]) box.dataset.points = String(u.n);
    const rpsData: uPlot.AlignedData = [b.t, ...b.byClass];
    const latData: uPlot.AlignedData = [b.t, b.p50, b.p95];
    const cpuData: uPlot.AlignedData = [u.t, u.cpu];
    const memData: uPlot.AlignedData = [u.t, u.mem, u.limit];
    const netData: uPlot.AlignedData = [u.t, u.rx, u.tx];
    drawn = [rpsData, latData, cpuData, memData, netData];
    if (charts.length) {
      drawn.forEach((d, i) => charts[i].setData(d));
      return;
    }
    make(drawn);
  };
  await draw();
  const scheme = window.matchMedia("(prefers-color-scheme: dark)");
  const recolour = () => {
    if (!drawn.length) return;
    charts.splice(0).forEach((c) => c.destroy());
    make(drawn);
  };
  scheme.addEventListener("change", recolour);
  const timer = window.setInterval(() => void draw().catch(() => {}), 15000);
  const resize = () => charts.forEach((c, i) => c.setSize({ width: Math.max(280, boxes[i].clientWidth), height: 220 }));
  window.addEventListener("resize", resize);
  return () => {
    window.clearInterval(timer);
    window.removeEventListener("resize", resize);
    scheme.removeEventListener("change", recolour);
    charts.forEach((c) => c.destroy());
  };
}
