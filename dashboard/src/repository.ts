// A project's repository: the webhook GitHub calls for the whole project (a push deploys every
// service built from the repository on that branch, a pull request opens a preview), its
// signing secret replaced, the pull-request previews' settings and the open ones, and the
// deliveries webhooks received (the project's, or one service's), as `stackpad previews` and
// `stackpad webhook` show them.

import { Environment, get, patch, put } from "./api";
import { badge, clear, h, short, time } from "./dom";
import { action, ask, form } from "./form";

export interface Delivery {
  id: number;
  service_id: string | null;
  service_name: string;
  delivery_id: string;
  event: string;
  outcome: string;
  reason: string;
  http_status: number;
  deployment_id: string | null;
  received_at: string;
}

/** The newest deliveries to a project's webhooks, or to one service's. */
export async function deliveries(project: string, service?: string, limit = 20): Promise<Delivery[]> {
  const q = new URLSearchParams({ limit: String(limit) });
  if (service) q.set("service", service);
  return (await get<{ items: Delivery[] }>(`/projects/${project}/webhook-deliveries?${q}`)).items;
}

/** Deliveries as a table: when, event, what became of it and why, the answer's status. */
export function deliveriesTable(items: Delivery[], withService: boolean): HTMLElement {
  if (!items.length) return h("p", { class: "muted deliveries" }, "No webhook delivery yet.");
  return h(
    "table",
    { class: "list deliveries" },
    h("thead", {}, h("tr", {}, ["When", "Event", ...(withService ? ["Service"] : []), "Outcome", "Why", "HTTP"].map((c) => h("th", {}, c)))),
    h(
      "tbody",
      {},
      items.map((d) =>
        h(
          "tr",
          { "data-delivery": d.delivery_id },
          h("td", { title: d.delivery_id }, time(d.received_at)),
          h("td", {}, d.event),
          withService ? h("td", {}, d.service_name || h("span", { class: "muted" }, "project")) : null,
          h("td", {}, badge(d.outcome), d.deployment_id ? [" ", h("a", { href: `#/deployments/${d.deployment_id}`, class: "mono" }, short(d.deployment_id))] : null),
          h("td", { class: "clip", title: d.reason }, d.reason),
          h("td", { class: "num" }, String(d.http_status)),
        ),
      ),
    ),
  );
}

/** Replaces a webhook's signing secret (`PATCH path`): a given one or a generated one, after a
 * dialog; the new secret is shown once, here. */
export function secretRotation(path: string): HTMLElement {
  const shown = h("div", { role: "status" });
  const f = form(
    [{ name: "secret", label: "New secret (optional)", type: "password", placeholder: "generated", hint: "32 to 256 characters; empty: Stackpad makes one" }],
    "New secret…",
    async (v) => {
      const yes = await ask({
        title: "Replace the webhook secret?",
        say: ["The current secret stops working at once: deliveries are refused until the repository has the new one."],
        confirm: "Replace",
      });
      if (!yes) return;
      const r = await patch<{ webhook_secret: string }>(path, v.secret ? { secret: v.secret } : {});
      clear(shown);
      shown.append(
        h("p", {}, "Copy it now: it is shown this once and never again."),
        h("code", { class: "record mono", id: "new-webhook-secret" }, r.webhook_secret),
      );
      (f.elements.namedItem("secret") as HTMLInputElement).value = "";
    },
    { inline: true },
  );
  return h("div", { class: "rotation" }, f, shown);
}

interface Previews {
  enabled: boolean;
  template_id: string | null;
  max_previews: number;
  allow_forks: boolean;
  idle_seconds: number | null;
  has_webhook_secret: boolean;
  webhook_url: string;
  items: (Environment & { preview: { number: number; head_sha: string; urls: string[]; status: string; sleeping_since: string | null } })[];
}

/** The project's repository card: its webhook, previews (settings and open ones), deliveries. */
export async function repositoryCard(project: string, envs: Environment[], owner: boolean): Promise<HTMLElement> {
  const [p, recent] = await Promise.all([get<Previews>(`/projects/${project}/previews`), deliveries(project, undefined, 10)]);
  const lasting = envs.filter((e) => !p.items.some((i) => i.id === e.id));
  const template = envs.find((e) => e.id === p.template_id);
  const refresh = () => window.dispatchEvent(new HashChangeEvent("hashchange"));
  const state = p.enabled
    ? `On: each pull request gets a copy of ${template?.name ?? "its template"}, at most ${p.max_previews} at once` +
      (p.allow_forks ? ", forks too" : "") +
      (p.idle_seconds ? `; asleep after ${p.idle_seconds} s without a request` : "") +
      "."
    : "Off: pull requests get no preview.";
  return h(
    "section",
    { class: "card repository" },
    h("h2", {}, "Repository"),
    h("p", { class: "muted" }, "GitHub's webhook for the whole project (content type application/json; pushes and pull requests): a push deploys every service built from the repository in each environment deploying that branch."),
    h("code", { class: "record mono" }, `${location.origin}${p.webhook_url}`),
    h("p", { class: "muted" }, p.has_webhook_secret ? "A signing secret is set." : "No signing secret yet: deliveries are refused until one is set."),
    owner ? secretRotation(`/projects/${project}/webhook`) : null,
    h("h3", {}, "Pull-request previews"),
    h("p", { class: "previews-state", "data-enabled": String(p.enabled) }, state),
    owner
      ? form(
          [
            { name: "template", label: "Copy of", options: lasting.map((e) => e.name), value: template?.name ?? lasting.find((e) => e.name === "production")?.name ?? lasting[0]?.name },
            { name: "max_previews", label: "At most", type: "number", value: String(p.max_previews) },
            { name: "allow_forks", label: "Forks", options: ["no", "yes"], value: p.allow_forks ? "yes" : "no", hint: "their code is not the project's" },
            { name: "idle_seconds", label: "Sleep after (s)", type: "number", value: p.idle_seconds ? String(p.idle_seconds) : "", placeholder: "never" },
          ],
          p.enabled ? "Save previews" : "Turn previews on",
          async (v) => {
            await put(`/projects/${project}/previews`, {
              enabled: true,
              template: v.template,
              max_previews: v.max_previews ? Number(v.max_previews) : undefined,
              allow_forks: v.allow_forks === "yes",
              idle_seconds: v.idle_seconds ? Number(v.idle_seconds) : undefined,
            });
            refresh();
          },
          { inline: true },
        )
      : null,
    owner && p.enabled
      ? h(
          "p",
          {},
          action("Turn previews off", async () => {
            // Off, keeping the rest (as `stackpad previews disable`): the open ones stay until
            // their pull request closes.
            await put(`/projects/${project}/previews`, {
              enabled: false,
              template: p.template_id,
              max_previews: p.max_previews,
              allow_forks: p.allow_forks,
              idle_seconds: p.idle_seconds ?? undefined,
            });
            refresh();
          }),
        )
      : null,
    p.items.length
      ? h(
          "table",
          { class: "list previews" },
          h("thead", {}, h("tr", {}, ["Pull request", "Environment", "Status", "Head", "URLs"].map((c) => h("th", {}, c)))),
          h(
            "tbody",
            {},
            p.items.map((e) =>
              h(
                "tr",
                {},
                h("td", {}, `#${e.preview.number}`),
                h("td", {}, h("a", { href: `#/projects/${project}?env=${encodeURIComponent(e.name)}` }, e.name)),
                h("td", {}, badge(e.preview.status), e.preview.sleeping_since ? h("small", { class: "muted" }, " asleep") : null),
                h("td", { class: "mono" }, e.preview.head_sha.slice(0, 7)),
                h("td", {}, e.preview.urls.map((u) => h("a", { href: u, class: "mono host", rel: "noopener", target: "_blank" }, u.replace(/^https:\/\//, "")))),
              ),
            ),
          ),
        )
      : h("p", { class: "muted" }, "No open preview."),
    h("h3", {}, "Recent deliveries"),
    deliveriesTable(recent, true),
  );
}
