// A service's settings as the forms take them (what `stackpad services create` and `services
// set` take as flags): CPU in cores, memory and volume sizes in MiB (or with Mi/Gi/Ti), the
// health check's path and times, variables as NAME=VALUE lines. One place turns them into the
// API's fields, and maps the API's field names back onto the forms' fields for its errors.

import { ApiError, Service } from "./api";
import type { Field } from "./form";

export const MiB = 2 ** 20;

/** The API's field (as its errors name it) -> the form's field. */
export const SPEC_ERROR_FIELDS: Record<string, string> = {
  "resources.cpu_millis": "cpu",
  "resources.memory_bytes": "memory",
  "health_check.path": "health_path",
  "health_check.interval_ms": "health_interval",
  "health_check.deadline_ms": "health_deadline",
  "git.url": "git",
  "git.subdirectory": "subdirectory",
  env_set: "value",
  secrets_set: "value",
};

/** A number the user typed, or undefined when the field is empty; NaN and negatives are an
 * error naming the field. */
export function number(value: string, field: string, label: string): number | undefined {
  if (value === "") return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new ApiError(422, `${label} must be a number of 0 or more, not ${JSON.stringify(value.slice(0, 20))}`, field);
  return n;
}

/** A size: a number of MiB, or with a unit (`512Mi`, `1Gi`, `1Ti`). */
export function size(value: string, field: string): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)\s*(Mi|MiB|Gi|GiB|Ti|TiB)?$/i.exec(value.trim());
  if (!m) throw new ApiError(422, `${JSON.stringify(value.slice(0, 20))} is not a size: a number of MiB, or 512Mi, 1Gi`, field);
  const unit = (m[2] ?? "mi").slice(0, 2).toLowerCase();
  const scale = unit === "ti" ? 2 ** 40 : unit === "gi" ? 2 ** 30 : MiB;
  return Math.round(Number(m[1]) * scale);
}

/** `name:/path:size` lines (blank lines skipped). */
export function volumes(text: string, field: string): { name: string; mount_path: string; size_bytes: number }[] {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => {
      const [name, mount_path, sz, ...rest] = l.split(":");
      if (!name || !mount_path || !sz || rest.length) {
        throw new ApiError(422, `${JSON.stringify(l.slice(0, 40))} is not name:path:size, e.g. data:/data:1Gi`, field);
      }
      return { name, mount_path, size_bytes: size(sz, field) };
    });
}

/** The resources and health check fields, filled from `s` when it is given. */
export function specFields(s: Service | null, group?: string): Field[] {
  const r = s?.resources;
  const hc = s?.health_check;
  const managed = !!s?.engine;
  return [
    { name: "cpu", label: "CPU (cores)", type: "number", value: r?.cpu_millis ? String(r.cpu_millis / 1000) : "", placeholder: s ? "no limit" : "0.5", group },
    { name: "memory", label: "Memory (MiB)", type: "number", value: r?.memory_bytes ? String(Math.round(r.memory_bytes / MiB)) : "", placeholder: "node default", group },
    ...(managed
      ? []
      : [
          { name: "health_path", label: "Health check path", value: hc?.path ?? "", placeholder: "TCP connect", hint: "an HTTP path answering 2xx, e.g. /healthz", group },
          { name: "health_interval", label: "Health check every (ms)", type: "number", value: hc?.interval_ms ? String(hc.interval_ms) : "", placeholder: "2000", group },
          { name: "health_deadline", label: "Healthy within (ms)", type: "number", value: hc?.deadline_ms ? String(hc.deadline_ms) : "", placeholder: "60000", hint: "how long a new version may take to become healthy", group },
        ]),
  ];
}

/** `resources` from the form's values: undefined when both are empty. */
export function resources(v: Record<string, string>): { cpu_millis?: number; memory_bytes?: number } | undefined {
  const cpu = number(v.cpu ?? "", "cpu", "CPU");
  const mem = number(v.memory ?? "", "memory", "Memory");
  if (cpu === undefined && mem === undefined) return undefined;
  return {
    ...(cpu === undefined ? {} : { cpu_millis: Math.round(cpu * 1000) }),
    ...(mem === undefined ? {} : { memory_bytes: Math.round(mem * MiB) }),
  };
}

export interface HealthInput {
  path?: string;
  interval_ms?: number;
  deadline_ms?: number;
}

/** The health check from the form's values (fields that are not in the form are undefined). */
export function health(v: Record<string, string>): HealthInput | undefined {
  if (v.health_path === undefined) return undefined;
  const interval = number(v.health_interval ?? "", "health_interval", "The interval");
  const deadline = number(v.health_deadline ?? "", "health_deadline", "The deadline");
  return {
    ...(v.health_path ? { path: v.health_path } : {}),
    ...(interval === undefined ? {} : { interval_ms: Math.round(interval) }),
    ...(deadline === undefined ? {} : { deadline_ms: Math.round(deadline) }),
  };
}

/** Whether two health checks ask the same (absent = not set). */
type Health = { path?: string | null; interval_ms?: number | null; deadline_ms?: number | null };

export function sameHealth(a: Health | null | undefined, b: Health | null | undefined): boolean {
  return (a?.path ?? null) === (b?.path ?? null) && (a?.interval_ms ?? null) === (b?.interval_ms ?? null) && (a?.deadline_ms ?? null) === (b?.deadline_ms ?? null);
}
