// The organization's API tokens and members. Owners create tokens (the secret is shown once,
// here, and never again), revoke them, add and remove members and change their roles; other
// roles read the members (the API lists tokens to owners only).

import { SessionInfo, del, get, patch, post } from "./api";
import { ago, append, badge, h, time } from "./dom";
import { action, form } from "./form";

interface TokenListed {
  id: string;
  name: string;
  role: string;
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
  expired: boolean;
}

interface Member {
  id: string;
  email: string;
  role: string;
  created_at: string;
}

const TOKEN_ROLES = ["read_only", "deployer", "owner"];
const MEMBER_ROLES = ["viewer", "developer", "admin", "owner"];

/** A member's role, changed on the spot (owners); the API's refusal (the last owner) beside it. */
function roleSelect(m: Member): HTMLElement {
  const err = h("span", { class: "field-error", role: "alert", hidden: true });
  const select = h(
    "select",
    { name: "member-role", "aria-label": `Role of ${m.email}` },
    MEMBER_ROLES.map((r) => h("option", { value: r, selected: r === m.role }, r)),
  );
  select.addEventListener("change", async () => {
    err.hidden = true;
    select.disabled = true;
    try {
      const updated = await patch<Member>(`/members/${m.id}`, { role: select.value });
      m.role = updated.role;
    } catch (e) {
      select.value = m.role;
      err.textContent = e instanceof Error ? e.message : String(e);
      err.hidden = false;
    } finally {
      select.disabled = false;
    }
  });
  return h("span", { class: "action role" }, select, err);
}

const refresh = () => window.dispatchEvent(new HashChangeEvent("hashchange"));

/** The new token's secret, shown once, until the page is left. */
let minted: { name: string; secret: string } | null = null;

export async function teamPage(main: HTMLElement, _p: string[], session: SessionInfo): Promise<void> {
  const owner = session.role === "owner";
  const [tokens, members] = await Promise.all([
    owner ? get<{ items: TokenListed[] }>("/tokens") : Promise.resolve(null),
    get<{ items: Member[] }>("/members"),
  ]);
  const shown = minted;
  minted = null;
  append(main, [
    h("div", { class: "title" }, h("h1", {}, "Team"), h("span", { class: "muted" }, session.organization?.name ?? "")),
    h("h2", {}, "API tokens"),
    shown
      ? h(
          "div",
          { class: "card secret-once", role: "status" },
          h("p", {}, `Token ${shown.name} created. Copy its secret now: it is shown this once and never again.`),
          h("code", { class: "record mono", id: "new-token-secret" }, shown.secret),
        )
      : null,
    !tokens
      ? h("p", { class: "muted" }, "Only owners see the organization's tokens.")
      : h(
          "table",
          { class: "list tokens" },
          h("thead", {}, h("tr", {}, ["Name", "Role", "Created", "Expires", "Last used", ""].map((c) => h("th", {}, c)))),
          h(
            "tbody",
            {},
            tokens.items.map((t) =>
              h(
                "tr",
                { "data-token": t.name },
                h("td", {}, t.name, t.name === session.token_name ? h("small", { class: "muted" }, " (this session)") : null),
                h("td", {}, t.role),
                h("td", {}, ago(t.created_at)),
                h("td", {}, t.expired ? badge("expired") : t.expires_at ? time(t.expires_at) : "never"),
                h("td", {}, t.last_used_at ? ago(t.last_used_at) : "never"),
                h(
                  "td",
                  {},
                  owner && t.name !== session.token_name
                    ? action("Revoke", async () => {
                        await del(`/tokens/${t.id}`);
                        refresh();
                      }, { danger: true, confirm: `Revoke token ${t.name}? Whatever uses it stops working at once.` })
                    : null,
                ),
              ),
            ),
          ),
        ),
    owner
      ? h(
          "section",
          { class: "card" },
          h("h2", {}, "Create a token"),
          form(
            [
              { name: "name", label: "Name", required: true, placeholder: "ci-deploy" },
              { name: "role", label: "Role", options: TOKEN_ROLES, value: "deployer" },
              { name: "expires_at", label: "Expires (optional)", type: "date", hint: "at most 366 days ahead" },
            ],
            "Create",
            async (v) => {
              const body: Record<string, string> = { name: v.name, role: v.role };
              if (v.expires_at) body.expires_at = new Date(`${v.expires_at}T23:59:59Z`).toISOString();
              const r = await post<{ token: TokenListed; secret: string }>("/tokens", body);
              minted = { name: r.token.name, secret: r.secret };
              refresh();
            },
            { inline: true },
          ),
        )
      : null,
    h("h2", {}, "Members"),
    h(
      "table",
      { class: "list members" },
      h("thead", {}, h("tr", {}, ["Email", "Role", "Added", ""].map((c) => h("th", {}, c)))),
      h(
        "tbody",
        {},
        members.items.length === 0
          ? h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No member yet."))
          : members.items.map((m) =>
              h(
                "tr",
                { "data-member": m.email },
                h("td", {}, m.email),
                h("td", {}, owner ? roleSelect(m) : m.role),
                h("td", {}, ago(m.created_at)),
                h(
                  "td",
                  {},
                  owner
                    ? action("Remove", async () => {
                        await del(`/members/${m.id}`);
                        refresh();
                      }, { danger: true, confirm: `Remove ${m.email}?` })
                    : null,
                ),
              ),
            ),
      ),
    ),
    owner
      ? h(
          "section",
          { class: "card" },
          h("h2", {}, "Add a member"),
          form(
            [
              { name: "email", label: "Email", required: true, type: "email", placeholder: "ada@example.com" },
              { name: "role", label: "Role", options: MEMBER_ROLES, value: "developer" },
            ],
            "Add",
            async (v) => {
              await post("/members", { email: v.email, role: v.role });
              refresh();
            },
            { inline: true },
          ),
        )
      : null,
  ]);
}
