// A service: what runs, its deployments (live), variables, domains, logs and metrics.

import { ApiError, Deployment, Domain, Environment, FINISHED, Page, Service, SessionInfo, del, get, patch, post } from "./api";
import { ago, append, badge, clear, h, short } from "./dom";
import { backupsTab } from "./backups";
import { Field, action, ask, form } from "./form";
import { deliveries, deliveriesTable, secretRotation } from "./repository";
import { SPEC_ERROR_FIELDS, health, number, resources, sameHealth, specFields, volumes } from "./spec";
import { logsTab } from "./logs";
import type { Cleanup } from "./main";
import { metricsTab } from "./metrics";

const TABS = ["deployments", "variables", "domains", "logs", "metrics", "settings"];

export async function servicePage(main: HTMLElement, [id, tab]: string[], session: SessionInfo): Promise<Cleanup | void> {
  const service = await get<Service>(`/services/${id}`);
  const current = tab ?? "deployments";
  const canChange = session.role !== "read_only";
  main.append(
    h(
      "div",
      { class: "title" },
      h("h1", {}, service.name),
      h("span", { class: "muted" }, service.engine ? `${service.kind} · ${service.engine} ${service.engine_version ?? ""}` : service.kind),
      h("a", { href: `#/projects/${service.project_id}`, class: "muted" }, "← project"),
    ),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Runs"),
      h("dd", { class: "mono" }, service.image ?? service.git_url ?? "a managed image"),
      service.hosts?.length
        ? [h("dt", {}, "URL"), h("dd", {}, service.hosts.map((host) => h("a", { href: `https://${host}/`, class: "mono host", rel: "noopener", target: "_blank" }, host)))]
        : null,
      service.internal_host ? [h("dt", {}, "Inside the project"), h("dd", { class: "mono" }, service.internal_host)] : null,
      h("dt", {}, "Replicas"),
      h("dd", {}, String(service.replicas)),
      service.volumes?.length
        ? [
            h("dt", {}, "Volumes"),
            h(
              "dd",
              { class: "volumes" },
              service.volumes.map((v) => h("div", { class: "volume", "data-volume": v.name }, h("span", { class: "mono" }, `${v.name} → ${v.mount_path}`), h("span", { class: "usage muted" }, bytes(v.size_bytes)))),
            ),
          ]
        : null,
    ),
    h(
      "nav",
      { class: "tabs", "aria-label": "Service" },
      [...TABS, ...(service.engine ? ["backups"] : [])].map((t) => h("a", { href: `#/services/${id}/${t}`, "aria-current": t === current ? "page" : undefined }, t)),
    ),
  );
  if (service.volumes?.length) void volumeUsage(main, service.id);
  const body = h("div", { class: "tab-body" });
  main.append(body);
  switch (current) {
    case "variables":
      return variablesTab(body, service, session.role === "owner");
    case "domains":
      return domainsTab(body, service, canChange);
    case "logs":
      return logsTab(body, service);
    case "metrics":
      return metricsTab(body, service);
    case "settings":
      return settingsTab(body, service, session);
    case "backups":
      if (service.engine) return backupsTab(body, service, session);
      throw new ApiError(404, `${service.name} is not a managed database or cache: it has no backups`);
    default:
      return deploymentsTab(body, service, canChange);
  }
}

/** A size in the largest unit that keeps it >= 1 (binary units). */
export function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${Number.isInteger(n) ? n : n.toFixed(1)} ${units[i]}`;
}

interface VolumeView {
  name: string;
  size_bytes: number;
  used_bytes: number | null;
  node: string | null;
  mounted: boolean;
  error: string | null;
}

/** Fills each volume's line with the bytes it uses, from its node (the line is there already,
 * so nothing moves when the answer comes). */
async function volumeUsage(main: HTMLElement, id: string): Promise<void> {
  let list: { items: VolumeView[] };
  try {
    list = await get(`/services/${id}/volumes`);
  } catch {
    return;
  }
  for (const v of list.items) {
    const el = main.querySelector<HTMLElement>(`.volume[data-volume="${CSS.escape(v.name)}"] .usage`);
    if (!el) continue;
    clear(el);
    if (v.used_bytes === null) {
      el.append(bytes(v.size_bytes), v.error ? h("small", { class: "error" }, ` · ${v.error}`) : " · not created yet");
      continue;
    }
    const pct = v.size_bytes ? Math.min(100, (100 * v.used_bytes) / v.size_bytes) : 0;
    el.append(
      h("meter", { min: 0, max: v.size_bytes, value: v.used_bytes, high: v.size_bytes * 0.8, "aria-label": `${v.name} used` }),
      ` ${bytes(v.used_bytes)} of ${bytes(v.size_bytes)} used (${pct.toFixed(pct < 10 ? 1 : 0)}%)`,
      v.node ? ` on ${v.node}` : "",
    );
  }
}

function deploymentRow(d: Deployment, serviceCurrent: string | null, canChange: boolean): HTMLTableRowElement {
  const what = d.git_commit ? d.git_commit.slice(0, 12) : d.git_ref ?? d.image ?? "";
  return h(
    "tr",
    { "data-id": d.id },
    h("td", {}, h("a", { href: `#/deployments/${d.id}`, class: "mono" }, short(d.id))),
    h("td", {}, badge(d.state), d.id === serviceCurrent ? h("small", { class: "muted" }, " live") : null),
    h("td", { class: "mono clip" }, what, d.rollback_of ? h("small", { class: "muted" }, ` rollback of ${short(d.rollback_of)}`) : null),
    h("td", {}, ago(d.created_at)),
    h(
      "td",
      {},
      canChange && d.ready_at && d.id !== serviceCurrent
        ? action("Roll back", async () => {
            const n = await post<Deployment>(`/deployments/${d.id}/rollback`);
            location.hash = `#/deployments/${n.id}`;
          })
        : null,
    ),
  );
}

async function deploymentsTab(body: HTMLElement, service: Service, canChange: boolean): Promise<Cleanup> {
  const tbody = h("tbody", {});
  const draw = async () => {
    const [s, page] = await Promise.all([
      get<Service>(`/services/${service.id}`),
      get<Page<Deployment>>(`/services/${service.id}/deployments?limit=20`),
    ]);
    clear(tbody);
    tbody.append(...page.items.map((d) => deploymentRow(d, s.current_deployment_id, canChange)));
    if (!page.items.length) tbody.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No deployment yet.")));
  };
  await draw();
  if (canChange) {
    const fields = service.git_url
      ? [{ name: "git_ref", label: "Branch, tag or commit", placeholder: "main" }]
      : [{ name: "image", label: "Image", placeholder: service.image ?? "registry/app:tag", value: service.image ?? "" }];
    body.append(
      h(
        "section",
        { class: "card" },
        h("h2", {}, "Deploy"),
        form(fields, "Deploy", async (v) => {
          const req: Record<string, string> = {};
          if (v.git_ref) req[/^[0-9a-f]{40}$/.test(v.git_ref) ? "git_commit" : "git_ref"] = v.git_ref;
          if (v.image) req.image = v.image;
          const d = await post<Deployment>(`/services/${service.id}/deployments`, req);
          location.hash = `#/deployments/${d.id}`;
        }, { inline: true }),
      ),
    );
  }
  body.append(
    h(
      "table",
      { class: "list deployments" },
      h("thead", {}, h("tr", {}, h("th", {}, "Deployment"), h("th", {}, "State"), h("th", {}, "Source"), h("th", {}, "Created"), h("th", {}, ""))),
      tbody,
    ),
  );
  // Live: while something is on its way, redraw every 2 s.
  const timer = window.setInterval(() => {
    const busy = [...tbody.querySelectorAll(".badge")].some((b) => !FINISHED.has(b.textContent ?? ""));
    if (busy) void draw().catch(() => {});
  }, 2000);
  return () => window.clearInterval(timer);
}

/** A variables table; `remove` (when allowed) drops one name. */
function varsTable(vars: Record<string, { value?: string | null; secret: boolean }>, remove: ((name: string) => Promise<void>) | null, where: string): HTMLTableElement {
  return h(
    "table",
    { class: "list vars" },
    h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Value"), h("th", {}, ""))),
    h(
      "tbody",
      {},
      Object.keys(vars).length === 0
        ? h("tr", {}, h("td", { colspan: 3, class: "muted" }, "None."))
        : Object.entries(vars).map(([k, v]) =>
            h(
              "tr",
              { "data-var": k },
              h("td", { class: "mono" }, k),
              h("td", { class: "mono clip" }, v.secret ? h("span", { class: "masked", title: "secret: never shown" }, "••••••••") : v.value ?? ""),
              h("td", {}, remove ? action("Remove", () => remove(k), { danger: true, confirm: `Remove ${k} from ${where}?` }) : null),
            ),
          ),
    ),
  );
}

/** The form that sets one variable or secret through `set`. */
function setVarForm(set: (name: string, value: string, secret: boolean) => Promise<void>): HTMLFormElement {
  return form(
    [
      { name: "name", label: "Name", required: true, placeholder: "LOG_LEVEL" },
      { name: "value", label: "Value", required: true },
      { name: "secret", label: "Kind", options: ["plain", "secret"], value: "plain" },
    ],
    "Set",
    (v) => set(v.name, v.value, v.secret === "secret"),
    { inline: true },
  );
}

async function variablesTab(body: HTMLElement, service: Service, canChange: boolean): Promise<void> {
  const env = await get<Environment>(`/environments/${service.environment_id}`);
  const refresh = () => window.dispatchEvent(new HashChangeEvent("hashchange"));
  // The service's own: the merge form of PATCH /services/{id} changes only the names given.
  const own = h(
    "section",
    { class: "own-vars" },
    h("h2", {}, "This service's variables"),
    h("p", { class: "muted" }, "Used from the service's next deployment. Secrets are stored sealed and never shown again."),
    varsTable(
      service.env ?? {},
      canChange
        ? async (k) => {
            await patch(`/services/${service.id}`, { unset: [k] });
            refresh();
          }
        : null,
      service.name,
    ),
    canChange
      ? setVarForm(async (name, value, secret) => {
          // The field names match the form's, so the API's error lands beside the field.
          try {
            await patch(`/services/${service.id}`, secret ? { secrets_set: { [name]: value } } : { env_set: { [name]: value } });
          } catch (e) {
            if (e instanceof ApiError && e.field) e.field = /^(env_set|secrets_set)\./.test(e.field) ? "value" : "name";
            throw e;
          }
          refresh();
        })
      : null,
  );
  body.append(own, environmentVars(env, canChange));
}

/** An environment's variables (they go to each of its services), editable by owners. */
export function environmentVars(env: Environment, canChange: boolean): HTMLElement {
  const refresh = () => window.dispatchEvent(new HashChangeEvent("hashchange"));
  return h(
    "section",
    { class: "env-vars" },
    h("h2", {}, `Environment ${env.name}`),
    h("p", { class: "muted" }, "These go to every service of the environment, over a service's own of the same name, from its next deployment."),
    varsTable(
      env.env ?? {},
      canChange
        ? async (k) => {
            await patch(`/environments/${env.id}`, { unset: [k] });
            refresh();
          }
        : null,
      env.name,
    ),
    canChange
      ? setVarForm(async (name, value, secret) => {
          const vars = { [name]: value };
          try {
            await patch(`/environments/${env.id}`, secret ? { secrets: vars } : { env: vars });
          } catch (e) {
            if (e instanceof ApiError && e.field) e.field = /^(env|secrets)\./.test(e.field) ? "value" : "name";
            throw e;
          }
          refresh();
        })
      : null,
  );
}

function record(d: Domain): HTMLElement {
  const recs = d.records ?? [];
  return h(
    "div",
    { class: "records" },
    recs.map((r) =>
      h("code", { class: "record" }, Object.values(r).filter((x) => typeof x === "string" || typeof x === "number").join("  ")),
    ),
  );
}

async function domainsTab(body: HTMLElement, service: Service, canChange: boolean): Promise<void> {
  const list = await get<{ items: Domain[] }>(`/services/${service.id}/domains`);
  const refresh = () => window.dispatchEvent(new HashChangeEvent("hashchange"));
  body.append(
    h(
      "table",
      { class: "list" },
      h("thead", {}, h("tr", {}, h("th", {}, "Domain"), h("th", {}, "Status"), h("th", {}, "DNS record to create"), h("th", {}, ""))),
      h(
        "tbody",
        {},
        list.items.length === 0
          ? h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No custom domain."))
          : list.items.map((d) =>
              h(
                "tr",
                {},
                h("td", { class: "mono" }, d.domain),
                h("td", {}, badge(d.status), d.last_error ? h("small", { class: "error" }, ` ${d.last_error}`) : null),
                h("td", {}, record(d)),
                h(
                  "td",
                  {},
                  canChange
                    ? [
                        action("Verify", async () => {
                          await post(`/services/${service.id}/domains/${encodeURIComponent(d.domain)}/verify`);
                          refresh();
                        }),
                        action("Remove", async () => {
                          await del(`/services/${service.id}/domains/${encodeURIComponent(d.domain)}`);
                          refresh();
                        }, { danger: true, confirm: `Remove ${d.domain}?` }),
                      ]
                    : null,
                ),
              ),
            ),
      ),
    ),
    h(
      "div",
      {},
      canChange
      ? h(
          "section",
          { class: "card" },
          h("h2", {}, "Add a domain"),
          form([{ name: "domain", label: "Domain", required: true, placeholder: "www.example.com" }], "Add", async (v) => {
            await post(`/services/${service.id}/domains`, { domain: v.domain });
            refresh();
          }, { inline: true }),
        )
      : null,
    ),
  );
}

/** A service's settings (as `stackpad services set` and `scale`), and its deletion. */
async function settingsTab(body: HTMLElement, service: Service, session: SessionInfo): Promise<void> {
  const owner = session.role === "owner";
  const r = service.resources ?? { cpu_millis: 0, memory_bytes: 0 };
  const fields: Field[] = [
    { name: "replicas", label: "Replicas", type: "number", value: String(service.replicas), hint: service.volumes?.length ? "one: its volumes live on one node" : "1 to 20; applies at once" },
    ...specFields(service),
    ...(service.engine ? [] : [{ name: "port", label: "Port", type: "number", value: String(service.port) }]),
    ...(service.image && !service.engine ? [{ name: "image", label: "Image", value: service.image }] : []),
    // A managed engine's volume is its data: it is not edited here.
    ...(service.engine
      ? []
      : [{ name: "volumes", label: "Volumes", type: "textarea", value: volumeLines(service), placeholder: "data:/data:1Gi", hint: "name:path:size, one a line; from the next deployment (one replica then)" }]),
  ];
  const saved = h("p", { class: "muted", role: "status" });
  append(body, [
    h(
      "section",
      { class: "card settings" },
      h("h2", {}, "Settings"),
      h("p", { class: "muted" }, "Replicas apply at once (the running version is deployed again with the new count); the rest from the next deployment."),
      owner
        ? form(
            fields,
            "Save",
            async (v) => {
              // Only what changed is sent: the API keeps the rest.
              const req: Record<string, unknown> = {};
              const replicas = number(v.replicas, "replicas", "Replicas");
              if (replicas !== undefined && replicas !== service.replicas) req.replicas = replicas;
              // An emptied field keeps what is set.
              const res = resources(v);
              const cpu = res?.cpu_millis ?? r.cpu_millis;
              const mem = res?.memory_bytes ?? r.memory_bytes;
              if (cpu !== r.cpu_millis || mem !== r.memory_bytes) req.resources = { cpu_millis: cpu, ...(mem ? { memory_bytes: mem } : {}) };
              const port = number(v.port ?? "", "port", "The port");
              if (port !== undefined && port !== service.port) req.port = port;
              const hc = health(v);
              if (hc && !sameHealth(hc, service.health_check)) req.health_check = hc;
              if (v.image !== undefined && v.image !== service.image) req.image = v.image;
              if (v.volumes !== undefined && v.volumes !== volumeLines(service)) {
                const wanted = volumes(v.volumes, "volumes");
                req.volumes = wanted;
                const gone = (service.volumes ?? []).filter((o) => !wanted.some((w) => w.name === o.name)).map((o) => o.name);
                if (gone.length) {
                  const yes = await ask({
                    title: `Remove ${gone.join(", ")}?`,
                    say: [`The data on ${gone.join(", ")} is deleted once no container of ${service.name} mounts it.`],
                    confirm: "Remove with its data",
                    typed: service.name,
                  });
                  if (!yes) return;
                  req.purge_volumes = true;
                }
              }
              if (!Object.keys(req).length) {
                saved.textContent = "Nothing changed.";
                return;
              }
              await patch(`/services/${service.id}`, req);
              window.dispatchEvent(new HashChangeEvent("hashchange"));
            },
            { errorFields: SPEC_ERROR_FIELDS },
          )
        : h("dl", { class: "facts" }, fields.flatMap((f) => [h("dt", {}, f.label), h("dd", {}, f.value || f.placeholder || "")])),
      saved,
    ),
    service.git_url ? await webhookCard(service, owner) : null,
    owner
      ? h(
          "section",
          { class: "card danger-zone" },
          h("h2", {}, "Delete this service"),
          h("p", { class: "muted" }, "Its containers stop and its routes and domains go." + (service.volumes?.length ? " Its volumes are kept for the platform's grace period (7 days unless the operator set another), then deleted." : "")),
          action("Delete service…", async () => {
            const yes = await ask({
              title: `Delete ${service.name}?`,
              say: [`${service.name} is taken off the platform: its containers stop, its address and custom domains stop answering.`],
              confirm: "Delete",
              typed: service.name,
            });
            if (!yes) return;
            await del(`/services/${service.id}`);
            location.hash = `#/projects/${service.project_id}`;
          }, { danger: true }),
        )
      : null,
  ]);
}

/** A service's volumes as the form writes them: `name:path:sizeMi`, one a line. */
function volumeLines(s: Service): string {
  return (s.volumes ?? []).map((v) => `${v.name}:${v.mount_path}:${v.size_bytes % 2 ** 30 === 0 ? `${v.size_bytes / 2 ** 30}Gi` : `${Math.round(v.size_bytes / 2 ** 20)}Mi`}`).join("\n");
}

/** Where GitHub sends a git service's pushes, a new signing secret (shown once), and the
 * deliveries its webhook received (as `stackpad webhook rotate` and `webhook deliveries`). */
async function webhookCard(service: Service, owner: boolean): Promise<HTMLElement> {
  const recent = await deliveries(service.project_id, service.id);
  return h(
    "section",
    { class: "card webhook" },
    h("h2", {}, "Push to deploy"),
    h("p", { class: "muted" }, "In the repository's webhook settings: this payload URL, content type application/json, the push event, and the secret."),
    h("code", { class: "record mono" }, `${location.origin}/webhooks/github/${service.id}`),
    owner ? secretRotation(`/services/${service.id}/webhook`) : null,
    h("h3", {}, "Recent deliveries"),
    deliveriesTable(recent, false),
  );
}
