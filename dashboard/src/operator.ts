// The operator's nodes (operator session), or an organization's activity: the audit log and
// each project's recent webhook deliveries.

import { AuditEntry, Node, Page, Project, SessionInfo, get } from "./api";
import { ago, badge, h, time } from "./dom";
import { deliveries, deliveriesTable } from "./repository";

export async function operatorPage(main: HTMLElement, _p: string[], session: SessionInfo): Promise<void> {
  if (session.kind === "operator") {
    const nodes = await get<Node[] | { items: Node[] }>("/nodes");
    const items = Array.isArray(nodes) ? nodes : nodes.items;
    main.append(
      h("div", { class: "title" }, h("h1", {}, "Nodes")),
      h(
        "table",
        { class: "list" },
        h("thead", {}, h("tr", {}, ["Name", "Role", "Status", "Address", "CPU", "Memory", "Build slots", "Heartbeat"].map((c) => h("th", {}, c)))),
        h(
          "tbody",
          {},
          items.map((n) =>
            h(
              "tr",
              {},
              h("td", {}, n.name),
              h("td", {}, n.role),
              h("td", {}, badge(n.status)),
              h("td", { class: "mono" }, n.address),
              h("td", {}, `${(n.cpu_millis / 1000).toFixed(1)} cores`),
              h("td", {}, `${Math.round(n.memory_bytes / 2 ** 20)} MiB`),
              h("td", {}, String(n.build_slots)),
              h("td", {}, ago(n.last_heartbeat_at)),
            ),
          ),
        ),
      ),
    );
    return;
  }
  const [audit, projects] = await Promise.all([
    get<AuditEntry[] | { items: AuditEntry[] }>("/audit"),
    get<Page<Project>>("/projects?limit=200"),
  ]);
  const auditItems = Array.isArray(audit) ? audit : audit.items;
  const recent = await Promise.all(
    projects.items.map(async (p) => ({ p, items: await deliveries(p.id).catch(() => []) })),
  );
  main.append(
    h("div", { class: "title" }, h("h1", {}, "Activity")),
    h("h2", {}, "Webhook deliveries"),
    h(
      "div",
      {},
      recent.every((d) => d.items.length === 0)
        ? h("p", { class: "muted" }, "No webhook delivery yet.")
        : recent.filter((d) => d.items.length).map((d) => h("section", {}, h("h3", {}, d.p.name), deliveriesTable(d.items, true))),
    ),
    h("h2", {}, "Audit log"),
    h(
      "table",
      { class: "list" },
      h("thead", {}, h("tr", {}, ["When", "Call", "Status"].map((c) => h("th", {}, c)))),
      h(
        "tbody",
        {},
        auditItems.map((a) => h("tr", {}, h("td", {}, time(a.at)), h("td", { class: "mono clip" }, `${a.method} ${a.path}`), h("td", {}, String(a.status)))),
      ),
    ),
  );
}
