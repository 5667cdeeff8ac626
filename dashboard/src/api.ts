// The REST API, as the signed-in browser calls it: same origin, the session cookie, and the
// session's CSRF token on every change. Errors keep the API's message and the field it names.

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
    public field?: string,
  ) {
    super(message);
  }
}

let csrf = "";

export function setCsrf(token: string): void {
  csrf = token;
}

/** Called when the API answers 401 (no session, or it ended): the app goes to sign-in. */
let onUnauthorized: () => void = () => {};

export function whenSignedOut(f: () => void): void {
  onUnauthorized = f;
}

export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET") headers["x-csrf-token"] = csrf;
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  if (r.status === 204) return undefined as T;
  const text = await r.text();
  let data: unknown = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!r.ok) {
    const e = (data as { error?: { message?: string; field?: string } } | null)?.error;
    if (r.status === 401 && path !== "/session") onUnauthorized();
    throw new ApiError(r.status, e?.message ?? `${r.status} ${r.statusText}`, e?.field);
  }
  return data as T;
}

export const get = <T>(path: string) => call<T>("GET", path);
export const post = <T>(path: string, body?: unknown) => call<T>("POST", path, body ?? {});
export const patch = <T>(path: string, body: unknown) => call<T>("PATCH", path, body);
export const put = <T>(path: string, body: unknown) => call<T>("PUT", path, body);
export const del = (path: string) => call<void>("DELETE", path);

// The shapes the pages read (the API's JSON; fields the pages do not use are left out).

export interface SessionInfo {
  kind: "organization" | "operator";
  organization?: { id: string; name: string };
  role?: string;
  token_name?: string;
  csrf_token: string;
  expires_at: string;
}

export interface Page<T> {
  items: T[];
  next: string | null;
}

export interface Project {
  id: string;
  name: string;
  created_at: string;
}

export interface EnvVar {
  value?: string | null;
  secret: boolean;
}

export interface Environment {
  id: string;
  project_id: string;
  name: string;
  branch: string;
  env?: Record<string, EnvVar>;
}

export interface Service {
  id: string;
  project_id: string;
  environment_id: string;
  name: string;
  kind: string;
  engine?: string | null;
  engine_version?: string;
  internal_host?: string;
  image: string | null;
  git_url: string | null;
  port: number;
  replicas: number;
  resources?: { cpu_millis: number; memory_bytes: number };
  health_check?: { path?: string | null; interval_ms?: number | null; deadline_ms?: number | null } | null;
  hosts?: string[];
  env: Record<string, EnvVar>;
  volumes?: Volume[];
  current_deployment_id: string | null;
  created_at: string;
}

export interface Volume {
  name: string;
  mount_path: string;
  size_bytes: number;
}

export interface TimelineStep {
  phase: string;
  detail: string;
  at: string;
}

export interface Deployment {
  id: string;
  service_id: string;
  state: string;
  phase: string;
  git_ref: string | null;
  git_commit: string | null;
  image: string | null;
  image_digest: string | null;
  rollback_of: string | null;
  failure_reason: string | null;
  created_at: string;
  finished_at: string | null;
  ready_at: string | null;
  timeline?: TimelineStep[];
}

export interface DnsRecord {
  type?: string;
  name?: string;
  value?: string;
  [key: string]: unknown;
}

export interface Domain {
  domain: string;
  status: string;
  records?: DnsRecord[];
  last_error?: string | null;
  [key: string]: unknown;
}

export interface LogLine {
  timestamp_ns: number;
  stream: string;
  deployment_id: string;
  line: string;
  cursor: string;
}

export interface AccessLogEntry {
  timestamp_ns: number;
  method: string;
  host: string;
  path: string;
  status: number;
  duration_ms: number;
  response_bytes: number;
  deployment_id: string;
}

export interface BuildLogLine {
  line_number: number;
  timestamp_ns: number;
  step: string;
  stream: number;
  line: string;
}

export interface Node {
  id: string;
  name: string;
  role: string;
  address: string;
  cpu_millis: number;
  memory_bytes: number;
  build_slots: number;
  status: string;
  last_heartbeat_at: string | null;
}

export interface AuditEntry {
  id: number;
  method: string;
  path: string;
  status: number;
  at: string;
}

export const FINISHED = new Set(["ready", "failed", "superseded", "cancelled"]);
