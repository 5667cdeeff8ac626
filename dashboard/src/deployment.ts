// A deployment as it happens: the steps queued -> building -> deploying -> ready (or failed),
// updated without reload, and the build log streamed line by line (server-sent events that
// resume from the last line seen if the connection or the control plane restarts).

import { BuildLogLine, Deployment, FINISHED, SessionInfo, get, post } from "./api";
import { badge, clear, h, short, time } from "./dom";
import { action } from "./form";
import type { Cleanup } from "./main";

const STEPS = ["queued", "building", "deploying", "ready"];

/** The user-facing step a pipeline phase belongs to. */
function stepOf(phase: string): string {
  if (phase === "queued") return "queued";
  if (phase === "building") return "building";
  if (phase === "ready") return "ready";
  if (["failed", "cleanup_then_failed", "cancelled", "superseded"].includes(phase)) return "end";
  return "deploying";
}

function stepper(d: Deployment): HTMLElement {
  const reached = new Map<string, string>();
  for (const t of d.timeline ?? []) {
    const s = stepOf(t.phase);
    if (!reached.has(s)) reached.set(s, t.at);
  }
  const failed = d.state === "failed" || d.state === "cancelled" || d.state === "superseded";
  const now = d.state === "deploying" ? "deploying" : d.state;
  return h(
    "ol",
    { class: "stepper", "aria-label": "Steps" },
    STEPS.map((s) => {
      const done = reached.has(s) && (s !== now || s === "ready");
      const cls = s === now && !FINISHED.has(now) ? "active" : done ? "done" : "todo";
      return h("li", { class: cls, "data-step": s }, h("span", { class: "dot" }), h("span", {}, s), h("small", { class: "muted" }, time(reached.get(s) ?? null)));
    }),
    failed ? h("li", { class: "failed", "data-step": d.state }, h("span", { class: "dot" }), h("span", {}, d.state)) : null,
  );
}

export async function deploymentPage(main: HTMLElement, [id]: string[], session: SessionInfo): Promise<Cleanup> {
  let d = await get<Deployment>(`/deployments/${id}`);
  const head = h("div", { class: "title" });
  const steps = h("div", { class: "steps" });
  const reason = h("pre", { class: "failure", hidden: true });
  const events = h("ol", { class: "timeline" });
  const actions = h("div", { class: "actions deployment-actions" });
  const log = h("pre", { class: "log build-log", tabindex: "0", "aria-label": "Build log", "aria-live": "polite" });
  const canChange = session.role !== "read_only";
  const draw = () => {
    clear(head);
    head.append(
      h("h1", {}, `Deployment ${short(d.id)}`),
      badge(d.state),
      h("a", { href: `#/services/${d.service_id}`, class: "muted" }, "← service"),
    );
    clear(steps);
    steps.append(stepper(d));
    reason.hidden = !d.failure_reason;
    reason.textContent = d.failure_reason ?? "";
    clear(events);
    for (const t of d.timeline ?? []) {
      events.append(h("li", {}, h("span", { class: "mono" }, t.phase), " ", h("span", {}, t.detail), " ", h("small", { class: "muted" }, time(t.at))));
    }
    clear(actions);
    if (canChange && !FINISHED.has(d.state)) {
      actions.append(action("Cancel", async () => {
        await post(`/deployments/${d.id}/cancel`);
      }, { danger: true, confirm: "Cancel this deployment?" }));
    }
    if (canChange && d.ready_at) {
      // Any version that once served can be served again: a rollback runs its exact image.
      actions.append(action("Roll back to this version", async () => {
        const n = await post<Deployment>(`/deployments/${d.id}/rollback`);
        location.hash = `#/deployments/${n.id}`;
      }));
    }
  };
  draw();
  main.append(
    head,
    steps,
    reason,
    actions,
    h("div", { class: "two" }, h("section", {}, h("h2", {}, "Build log"), log), h("section", {}, h("h2", {}, "Timeline"), events)),
  );
  // The build log, followed from the last line seen: a dropped connection (a control
  // restart) follows again from there.
  let source: EventSource | null = null;
  let lines = 0;
  let retry = 0;
  const follow = () => {
    const es = new EventSource(`/deployments/${id}/build-logs?follow=true&after=${lines}`);
    source = es;
    es.onmessage = (ev) => {
      const l = JSON.parse(ev.data) as BuildLogLine;
      if (l.line_number <= lines) return;
      lines = l.line_number;
      const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.append(h("span", { class: l.stream === 2 ? "err" : "" }, `${l.step ? `[${l.step}] ` : ""}${l.line}\n`));
      if (atEnd) log.scrollTop = log.scrollHeight;
    };
    es.addEventListener("end", () => {
      es.close();
      source = null;
      if (lines === 0) log.textContent = d.git_ref || d.git_commit ? "No build log lines." : "No build: this deployment runs an image.";
    });
    es.onerror = () => {
      es.close();
      if (source !== es) return;
      retry = window.setTimeout(follow, 1000);
    };
  };
  follow();
  // The steps: polled every second until the deployment is over.
  const timer = window.setInterval(async () => {
    if (FINISHED.has(d.state)) return;
    try {
      d = await get<Deployment>(`/deployments/${id}`);
      draw();
    } catch {
      // A control restart: the next tick tries again.
    }
  }, 1000);
  return () => {
    window.clearInterval(timer);
    window.clearTimeout(retry);
    const s = source;
    source = null;
    s?.close();
  };
}
