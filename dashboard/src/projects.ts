// The organization's projects, and a project: its environments and its stack as a graph
// (web services and workers on the left, the databases and caches they use on the right).

import { Environment, Page, Project, Service, SessionInfo, del, get, patch, post } from "./api";
import { ago, append, h } from "./dom";
import { action, ask, form, pairs } from "./form";
import { repositoryCard } from "./repository";
import { environmentVars } from "./service";
import { SPEC_ERROR_FIELDS, health, number, resources, specFields, volumes } from "./spec";

export async function overviewPage(main: HTMLElement, _p: string[], session: SessionInfo): Promise<void> {
  if (session.kind === "operator") {
    location.hash = "#/operator";
    return;
  }
  const page = await get<Page<Project>>("/projects?limit=200");
  main.append(
    h("div", { class: "title" }, h("h1", {}, session.organization?.name ?? "Projects")),
    page.items.length === 0
      ? h("p", { class: "empty" }, "No project yet. Create the first one below.")
      : h(
          "ul",
          { class: "cards" },
          page.items.map((p) =>
            h(
              "li",
              { class: "card" },
              h("a", { href: `#/projects/${p.id}`, class: "card-link" }, h("h2", {}, p.name)),
              h("p", { class: "muted" }, `created ${ago(p.created_at)}`),
            ),
          ),
        ),
    session.role !== "owner"
      ? h("p", { class: "muted" }, `Projects are created by owners; this session has the ${session.role} role.`)
      : h(
      "section",
      { class: "card" },
      h("h2", {}, "New project"),
      form([{ name: "name", label: "Name", required: true, placeholder: "shop" }], "Create project", async (v) => {
        const p = await post<Project>("/projects", { name: v.name });
        location.hash = `#/projects/${p.id}`;
      }, { inline: true }),
    ),
  );
}

/** Names a service's variables reference (`${{ db.DATABASE_URL }}` -> db). */
export function references(s: Service): string[] {
  const out = new Set<string>();
  for (const v of Object.values(s.env ?? {})) {
    for (const m of (v.value ?? "").matchAll(/\$\{\{\s*([a-z0-9-]+)\./g)) out.add(m[1]);
  }
  return [...out];
}

function stackGraph(services: Service[]): HTMLElement {
  const data = services.filter((s) => s.kind === "database" || s.kind === "cache");
  const apps = services.filter((s) => !data.includes(s));
  const node = (s: Service) =>
    h(
      "a",
      { href: `#/services/${s.id}`, class: `node k-${s.kind}`, id: `node-${s.name}` },
      h("strong", {}, s.name),
      h("span", { class: "muted" }, s.engine ? `${s.kind} · ${s.engine}` : s.kind),
    );
  const edges = apps.flatMap((a) =>
    references(a)
      .filter((n) => data.some((d) => d.name === n))
      .map((n) => h("li", {}, `${a.name} → ${n}`)),
  );
  return h(
    "section",
    { class: "graph", "aria-label": "The stack" },
    h("div", { class: "col" }, h("h3", {}, "Apps"), apps.length ? apps.map(node) : h("p", { class: "muted" }, "none")),
    h("div", { class: "arrow", "aria-hidden": "true" }, "→"),
    h("div", { class: "col" }, h("h3", {}, "Data"), data.length ? data.map(node) : h("p", { class: "muted" }, "none")),
    h("div", { class: "edges" }, h("h3", {}, "Uses"), edges.length ? h("ul", {}, edges) : h("p", { class: "muted" }, "no references")),
  );
}

/** What `stackpad services create` takes: the source, then (folded) the replicas, resources,
 * health check, variables and secrets, volumes and the webhook secret. */
function newServiceForm(project: string, env: Environment | undefined): HTMLFormElement {
  const more = "Replicas, resources, health check";
  const vars = "Variables and secrets";
  const store = "Volumes";
  return form(
    [
      { name: "name", label: "Name", required: true, placeholder: "web" },
      { name: "kind", label: "Kind", options: ["web", "worker", "database", "cache"], value: "web" },
      { name: "engine", label: "Engine (database, cache)", options: ["", "postgres", "mariadb", "redis"], value: "" },
      { name: "image", label: "Image", placeholder: "registry/app:tag", hint: "or a git repository below" },
      { name: "git", label: "Git repository", placeholder: "https://…" },
      { name: "subdirectory", label: "App folder in the repository", placeholder: "apps/web (optional)" },
      { name: "port", label: "Port", type: "number", placeholder: "8080" },
      { name: "replicas", label: "Replicas", type: "number", placeholder: "1", hint: "1 to 20", group: more },
      ...specFields(null, more),
      { name: "env", label: "Variables", type: "textarea", placeholder: "MODE=prod\nLOG=info", hint: "NAME=VALUE, one a line", group: vars },
      { name: "secrets", label: "Secrets", type: "textarea", placeholder: "API_KEY=…", hint: "stored sealed, never shown again", group: vars },
      { name: "webhook_secret", label: "Webhook secret (git)", type: "password", placeholder: "generated", hint: "the secret GitHub signs pushes with; 32 characters or more", group: vars },
      { name: "volumes", label: "Volumes", type: "textarea", placeholder: "data:/data:1Gi", hint: "name:path:size (MiB, or 512Mi, 1Gi), one a line", group: store },
    ],
    "Create service",
    async (v) => {
      const body: Record<string, unknown> = { name: v.name, kind: v.kind };
      if (env) body.environment_id = env.id;
      if (v.engine) body.engine = v.engine;
      if (v.image) body.image = v.image;
      if (v.git) body.git = { url: v.git, ...(v.subdirectory ? { subdirectory: v.subdirectory } : {}) };
      const port = number(v.port, "port", "The port");
      if (port !== undefined) body.port = port;
      const replicas = number(v.replicas, "replicas", "Replicas");
      if (replicas !== undefined) body.replicas = replicas;
      const r = resources(v);
      if (r) body.resources = r;
      const hc = health(v);
      if (hc && Object.keys(hc).length) body.health_check = hc;
      const env_ = pairs(v.env, "env");
      if (Object.keys(env_).length) body.env = env_;
      const secrets = pairs(v.secrets, "secrets");
      if (Object.keys(secrets).length) body.secrets = secrets;
      if (v.webhook_secret) body.webhook_secret = v.webhook_secret;
      const vols = volumes(v.volumes, "volumes");
      if (vols.length) body.volumes = vols;
      const s = await post<Service>(`/projects/${project}/services`, body);
      location.hash = `#/services/${s.id}`;
    },
    { errorFields: SPEC_ERROR_FIELDS },
  );
}

export async function projectPage(main: HTMLElement, [id]: string[], session: SessionInfo): Promise<void> {
  const [project, envs, services] = await Promise.all([
    get<Project>(`/projects/${id}`),
    get<{ items: Environment[] }>(`/projects/${id}/environments`),
    get<Page<Service>>(`/projects/${id}/services?limit=200`),
  ]);
  const wanted = new URLSearchParams(location.hash.split("?")[1] ?? "").get("env");
  const env = envs.items.find((e) => e.name === wanted) ?? envs.items.find((e) => e.name === "production") ?? envs.items[0];
  const inEnv = services.items.filter((s) => !env || s.environment_id === env.id);
  const tabs = h(
    "nav",
    { class: "tabs", "aria-label": "Environments" },
    envs.items.map((e) =>
      h(
        "a",
        { href: `#/projects/${id}?env=${encodeURIComponent(e.name)}`, "aria-current": e.id === env?.id ? "page" : undefined },
        e.name,
        h("small", { class: "muted" }, ` ${e.branch}`),
      ),
    ),
  );
  append(main, [
    h("div", { class: "title" }, h("h1", {}, project.name), h("span", { class: "muted" }, `${services.items.length} ${services.items.length === 1 ? "service" : "services"}`)),
    tabs,
    stackGraph(inEnv),
    h(
      "table",
      { class: "list" },
      h("thead", {}, h("tr", {}, h("th", {}, "Service"), h("th", {}, "Kind"), h("th", {}, "Address"), h("th", {}, "Deployed"))),
      h(
        "tbody",
        {},
        inEnv.map((s) =>
          h(
            "tr",
            {},
            h("td", {}, h("a", { href: `#/services/${s.id}` }, s.name)),
            h("td", {}, s.engine ? `${s.kind} (${s.engine})` : s.kind),
            h("td", { class: "mono" }, s.hosts?.[0] ?? s.internal_host ?? ""),
            h("td", {}, s.current_deployment_id ? "yes" : h("span", { class: "muted" }, "not yet")),
          ),
        ),
      ),
    ),
    session.role !== "owner"
      ? null
      : h(
      "div",
      { class: "two" },
      h(
        "section",
        { class: "card" },
        h("h2", {}, "New service"),
        newServiceForm(id, env),
      ),
      h(
        "section",
        { class: "card" },
        h("h2", {}, "New environment"),
        form(
          [
            { name: "name", label: "Name", required: true, placeholder: "staging" },
            { name: "branch", label: "Branch", required: true, placeholder: "staging" },
            { name: "from", label: "Copy services from", options: ["", ...envs.items.map((e) => e.name)], value: "", hint: "their settings, variables and secrets; not domains or deployments" },
            { name: "env", label: "Variables", type: "textarea", placeholder: "MODE=staging", hint: "NAME=VALUE, one a line (over copied ones)", group: "Variables and secrets" },
            { name: "secrets", label: "Secrets", type: "textarea", placeholder: "API_KEY=…", hint: "stored sealed, never shown again", group: "Variables and secrets" },
          ],
          "Create environment",
          async (v) => {
            const body: Record<string, unknown> = { name: v.name, branch: v.branch };
            if (v.from) body.from = v.from;
            const env_ = pairs(v.env, "env");
            if (Object.keys(env_).length) body.env = env_;
            const secrets = pairs(v.secrets, "secrets");
            if (Object.keys(secrets).length) body.secrets = secrets;
            await post(`/projects/${id}/environments`, body);
            location.hash = `#/projects/${id}?env=${encodeURIComponent(v.name)}`;
          },
        ),
      ),
    ),
  ]);
  const owner = session.role === "owner";
  // The environment's variables, the repository (webhook, previews, deliveries); fetched
  // together so the page grows once.
  const [envFull, repository] = await Promise.all([
    env ? get<Environment>(`/environments/${env.id}`) : Promise.resolve(null),
    repositoryCard(id, envs.items, owner),
  ]);
  const tail = [envFull ? h("div", { class: "card" }, environmentVars(envFull, owner)) : null, repository];
  if (!owner) {
    main.append(...tail.filter((x): x is HTMLElement => x !== null));
    return;
  }
  // What `stackpad environments set/delete` and `projects delete` do.
  main.append(
    h(
      "div",
      { class: "two" },
      env
        ? h(
            "section",
            { class: "card" },
            h("h2", {}, `Environment ${env.name}`),
            form(
              [{ name: "branch", label: "Deploys the branch", required: true, value: env.branch }],
              "Save",
              async (v) => {
                await patch(`/environments/${env.id}`, { branch: v.branch });
                window.dispatchEvent(new HashChangeEvent("hashchange"));
              },
              { inline: true },
            ),
            envs.items.length > 1
              ? h(
                  "p",
                  {},
                  action(`Delete ${env.name}…`, async () => {
                    const yes = await ask({
                      title: `Delete environment ${env.name}?`,
                      say: [`Its ${inEnv.length} services are taken off the platform (routes, certificates, containers), then the environment goes.`],
                      confirm: "Delete",
                      typed: env.name,
                    });
                    if (!yes) return;
                    await del(`/environments/${env.id}`);
                    location.hash = `#/projects/${id}`;
                  }, { danger: true }),
                )
              : null,
          )
        : null,
      h(
        "section",
        { class: "card danger-zone" },
        h("h2", {}, "Delete this project"),
        h("p", { class: "muted" }, "Its services are taken off the platform first, then the project goes with its environments."),
        action("Delete project…", async () => {
          const yes = await ask({
            title: `Delete project ${project.name}?`,
            say: [`Every service of ${project.name} (${services.items.length}) stops and its addresses stop answering.`],
            confirm: "Delete",
            typed: project.name,
          });
          if (!yes) return;
          await del(`/projects/${id}`);
          location.hash = "#/";
        }, { danger: true }),
      ),
    ),
  );
  main.append(...tail.filter((x): x is HTMLElement => x !== null));
}
