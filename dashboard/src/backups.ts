// A managed database's or cache's backups: the list (state, size, verification) updated live
// while one runs, a backup on demand, the schedule, and a restore that asks first (a dialog
// naming what is replaced) and then shows its steps as they happen. A restore's id stays in
// the address (?restore=...), so a reload or a control restart picks its progress up again.

import { ApiError, Page, Service, SessionInfo, get, post, put } from "./api";
import { ago, badge, clear, h, short, time } from "./dom";
import { action, ask, form } from "./form";
import type { Cleanup } from "./main";
import { bytes } from "./service";

export interface Backup {
  id: string;
  service_id: string;
  engine: string;
  /** `dump`, or `base` (PostgreSQL's base backup: restored to a point in time). */
  kind?: string;
  trigger: string;
  state: string;
  verification: string;
  verification_detail: string;
  size_bytes: number | null;
  dump_bytes: number | null;
  error: string | null;
  started_at: string;
  completed_at: string | null;
  duration_ms: number | null;
  verified_at: string | null;
}

interface BackupEvent {
  step: string;
  detail: string;
  at: string;
}

interface Restore {
  id: string;
  backup_id: string;
  service_id: string;
  pre_restore_backup_id: string | null;
  state: string;
  error: string | null;
  started_at: string;
  finished_at: string | null;
  events?: BackupEvent[];
}

interface RecoveryWindow {
  from: string | null;
  until: string | null;
}

/** Where a restore goes: the backup's own service, or another of the same engine. */
interface Target {
  id: string;
  name: string;
}

interface Policy {
  interval_seconds: number;
  keep: number;
  next_at: string;
  failures: number;
}

/** The restore the address names (`#/services/<id>/backups?restore=<uuid>`), if any. */
function restoreInAddress(): string | null {
  const q = location.hash.split("?")[1] ?? "";
  const id = new URLSearchParams(q).get("restore");
  return id && /^[0-9a-f-]{36}$/.test(id) ? id : null;
}

function every(seconds: number): string {
  if (seconds % 86400 === 0) return seconds === 86400 ? "daily" : `every ${seconds / 86400} days`;
  if (seconds % 3600 === 0) return seconds === 3600 ? "hourly" : `every ${seconds / 3600} h`;
  return `every ${Math.round(seconds / 60)} min`;
}

function row(b: Backup, restore: ((b: Backup) => void) | null): HTMLTableRowElement {
  const verified =
    b.verification === "verified"
      ? h("span", { title: b.verification_detail }, badge("verified"), h("small", { class: "muted" }, ` ${ago(b.verified_at)}`))
      : b.verification === "failed"
        ? h("span", {}, badge("failed"), h("small", { class: "error" }, ` ${b.verification_detail}`))
        : badge(b.state === "completed" ? "pending" : "—");
  // Busy: running, or completed a moment ago and its verification restore still on its way.
  const verifying = b.state === "completed" && b.verification === "pending" && Date.now() - new Date(b.completed_at ?? 0).getTime() < 600_000;
  return h(
    "tr",
    { "data-backup": b.id, "data-busy": b.state === "running" || verifying ? "1" : undefined },
    h("td", {}, h("span", { class: "mono" }, short(b.id)), h("small", { class: "muted" }, ` ${b.trigger.replace("_", "-")}${b.kind === "base" ? " · base" : ""}`)),
    h("td", { title: time(b.started_at) }, ago(b.started_at)),
    h("td", {}, badge(b.state), b.error ? h("small", { class: "error" }, ` ${b.error}`) : null),
    h("td", { class: "num" }, b.size_bytes === null ? "" : bytes(b.size_bytes)),
    h("td", {}, verified),
    h("td", {}, restore && b.state === "completed" && b.kind !== "base" ? h("button", { type: "button", class: "danger", onclick: () => restore(b) }, "Restore…") : null),
  );
}

/** Asks before a restore, naming what is replaced: into the backup's own service its current
 * data is kept first; into another one, that one's data is lost, so its name is typed. */
function confirmRestore(service: Service, what: string, into: Target): Promise<boolean> {
  if (into.id === "new") {
    return ask({
      title: `Restore into a new service ${into.name}?`,
      say: [`A new ${service.engine} service ${into.name} is made (its own credentials and volume) and ${what} of ${service.name} is restored into it.`, `${service.name} is only read.`],
      confirm: "Make it and restore",
    });
  }
  if (into.id === service.id) {
    return ask({
      title: `Restore ${service.name}?`,
      say: [`The data of ${service.name} is replaced by ${what}.`, "Its current data is backed up first, so this restore can be undone by restoring that backup."],
      confirm: "Restore",
    });
  }
  return ask({
    title: `Restore into ${into.name}?`,
    say: [`The data of ${into.name} is replaced by ${what} of ${service.name}; ${service.name} is only read.`, `The current data of ${into.name} is not kept.`],
    confirm: "Restore",
    typed: into.name,
  });
}

function backupWords(b: Backup): string {
  return `backup ${short(b.id)} taken ${time(b.completed_at ?? b.started_at)}` + (b.size_bytes === null ? "" : ` (${bytes(b.size_bytes)})`);
}

/** A restore's steps as they happen, polled until it ends. */
function restoreProgress(id: string, onEnd: () => void): { el: HTMLElement; stop: () => void } {
  const head = h("p", {});
  const steps = h("ol", { class: "timeline" });
  const el = h("section", { class: "card restore", "aria-live": "polite" }, h("h2", {}, "Restore"), head, steps);
  let timer = 0;
  let stopped = false;
  const draw = async () => {
    const r = await get<Restore>(`/restores/${id}`);
    clear(head);
    head.append(badge(r.state), ` backup ${short(r.backup_id)}, started ${ago(r.started_at)}`);
    if (r.error) head.append(h("span", { class: "error" }, ` ${r.error}`));
    clear(steps);
    steps.append(...(r.events ?? []).map((e) => h("li", { "data-step": e.step }, h("strong", {}, e.step.replaceAll("_", " ")), ` ${e.detail} `, h("small", { class: "muted" }, time(e.at)))));
    el.dataset.state = r.state;
    if (r.state !== "running") {
      onEnd();
      return;
    }
    if (!stopped) timer = window.setTimeout(() => void draw().catch(retry), 1000);
  };
  // A dropped connection (or a restarting control plane) is tried again.
  const retry = () => {
    if (!stopped) timer = window.setTimeout(() => void draw().catch(retry), 2000);
  };
  void draw().catch(retry);
  return {
    el,
    stop: () => {
      stopped = true;
      window.clearTimeout(timer);
    },
  };
}

export async function backupsTab(body: HTMLElement, service: Service, session: SessionInfo): Promise<Cleanup> {
  const owner = session.role === "owner";
  const tbody = h("tbody", {});
  const progress = h("div", {});
  const policyText = h("p", { class: "muted" });
  let stopRestore: (() => void) | null = null;
  const windowText = h("p", { class: "muted window" });
  let recovery: RecoveryWindow = { from: null, until: null };
  const draw = async () => {
    const list = await get<{ items: Backup[]; recovery_window?: RecoveryWindow }>(`/services/${service.id}/backups`);
    recovery = list.recovery_window ?? { from: null, until: null };
    windowText.textContent = recovery.from && recovery.until
      ? `Can be restored to any moment from ${time(recovery.from)} to ${time(recovery.until)}.`
      : "No moment to restore to yet: the window opens with the first scheduled base backup and the write-ahead log archived after it.";
    clear(tbody);
    tbody.append(...list.items.map((b) => row(b, owner ? startRestore : null)));
    if (!list.items.length) tbody.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No backup yet.")));
  };
  const follow = (id: string) => {
    stopRestore?.();
    clear(progress);
    const p = restoreProgress(id, () => void draw().catch(() => {}));
    stopRestore = p.stop;
    progress.append(p.el);
  };
  // Where a restore goes (`stackpad backups restore --into`): this service or another of its
  // engine in the project.
  const others = owner
    ? (await get<Page<Service>>(`/projects/${service.project_id}/services?limit=200`)).items.filter((s) => s.engine === service.engine && s.id !== service.id)
    : [];
  const targets: Target[] = [{ id: service.id, name: service.name }, ...others.map((s) => ({ id: s.id, name: s.name }))];
  const into = h(
    "select",
    { name: "into", id: "restore-into" },
    targets.map((t, i) => h("option", { value: t.id }, i === 0 ? `${t.name} (this service)` : t.name)),
    h("option", { value: "new" }, "a new service…"),
  );
  // A new service's name (`new_service`), asked when "a new service" is picked.
  const newName = h("input", { name: "new_service", placeholder: `${service.name}-restored`, "aria-label": "The new service's name", hidden: true });
  into.addEventListener("change", () => {
    newName.hidden = into.value !== "new";
    if (!newName.hidden) newName.focus();
  });
  const target = (): Target =>
    into.value === "new" ? { id: "new", name: newName.value.trim() || `${service.name}-restored` } : targets.find((t) => t.id === into.value) ?? targets[0];
  /** The request's target: none (the service itself), another service, or a new one. */
  const where = (t: Target): Record<string, unknown> =>
    t.id === service.id ? {} : t.id === "new" ? { new_service: { name: t.name } } : { into_service: t.id };
  /** Asks, starts the restore `start` makes, and follows it; its error is shown instead. */
  async function runRestore(what: string, start: (body: Record<string, unknown>) => Promise<Restore>): Promise<void> {
    const t = target();
    if (!(await confirmRestore(service, what, t))) return;
    try {
      const r = await start(where(t));
      history.replaceState(null, "", `#/services/${service.id}/backups?restore=${r.id}`);
      follow(r.id);
    } catch (e) {
      // A refused time goes beside its field.
      if (e instanceof ApiError && e.field === "to_time") throw e;
      clear(progress);
      progress.append(h("p", { class: "error", role: "alert" }, e instanceof Error ? e.message : String(e)));
    }
    await draw();
  }
  async function startRestore(b: Backup): Promise<void> {
    await runRestore(backupWords(b), (body) => post<Restore>(`/services/${service.id}/backups/${b.id}/restore`, body));
  }
  /** Point-in-time recovery (PostgreSQL): the time as the user's clock shows it. */
  const toTime = owner && service.engine === "postgres"
    ? form(
        [{ name: "to_time", label: "Restore to", type: "datetime-local", required: true, hint: "your local time, to the second" }],
        "Restore to this moment…",
        async (v) => {
          const at = new Date(v.to_time);
          if (Number.isNaN(at.getTime())) throw new ApiError(422, `${JSON.stringify(v.to_time)} is not a time`, "to_time");
          await runRestore(`its data as it was at ${at.toLocaleString()}`, (body) =>
            post<Restore>(`/services/${service.id}/backups/restore`, { to_time: at.toISOString(), ...body }),
          );
        },
        { inline: true },
      )
    : null;
  toTime?.querySelector("input")?.setAttribute("step", "1");
  const drawPolicy = async () => {
    const p = await get<Policy>(`/services/${service.id}/backup-policy`);
    policyText.textContent = `Scheduled ${every(p.interval_seconds)}, the last ${p.keep} kept; next ${time(p.next_at)}.` + (p.failures ? ` ${p.failures} failed in a row.` : "");
    return p;
  };
  await draw();
  const policy = await drawPolicy();
  body.append(
    h(
      "section",
      { class: "backups" },
      h("div", { class: "title" }, h("h2", {}, "Backups"), owner ? action("Back up now", async () => {
        await post(`/services/${service.id}/backups`);
        await draw();
      }) : null),
      policyText,
      h(
        "table",
        { class: "list backups" },
        h("thead", {}, h("tr", {}, ["Backup", "Started", "State", "Size", "Verified", ""].map((c) => h("th", {}, c)))),
        tbody,
      ),
      owner ? h("p", { class: "restore-into" }, h("label", { for: "restore-into" }, "Restores go into "), into, " ", newName) : null,
      service.engine === "postgres" ? h("section", { class: "card pitr" }, h("h2", {}, "Point in time"), windowText, toTime) : null,
      progress,
      owner
        ? h(
            "details",
            { class: "card" },
            h("summary", {}, "Schedule"),
            form(
              [
                { name: "interval_hours", label: "Every (hours)", type: "number", value: String(policy.interval_seconds / 3600), required: true },
                { name: "keep", label: "Keep (backups)", type: "number", value: String(policy.keep), required: true },
              ],
              "Save",
              async (v) => {
                await put(`/services/${service.id}/backup-policy`, {
                  interval_seconds: Math.round(Number(v.interval_hours) * 3600),
                  keep: Number(v.keep),
                });
                await drawPolicy();
              },
              { inline: true },
            ),
          )
        : null,
    ),
  );
  const pending = restoreInAddress();
  if (pending) follow(pending);
  // Live: while a backup runs (or is being verified), redraw every 2 s.
  const timer = window.setInterval(() => {
    if (tbody.querySelector("tr[data-busy]")) void draw().catch(() => {});
  }, 2000);
  return () => {
    window.clearInterval(timer);
    stopRestore?.();
  };
}
