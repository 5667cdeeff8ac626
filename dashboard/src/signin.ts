import { SessionInfo, post } from "./api";
import { h } from "./dom";
import { form } from "./form";

export async function signInPage(main: HTMLElement, done: (s: SessionInfo) => void): Promise<void> {
  main.append(
    h(
      "section",
      { class: "signin card" },
      h("h1", {}, "Sign in"),
      h(
        "p",
        { class: "muted" },
        "Paste an API token of your organization (stackpad tokens create) or the operator token. ",
        "It is exchanged for a session that ends after 12 hours, when you sign out, or when the token is revoked.",
      ),
      form(
        [{ name: "token", label: "API token", type: "password", required: true, placeholder: "sp_…" }],
        "Sign in",
        async (v) => done(await post<SessionInfo>("/session", { token: v.token })),
      ),
    ),
  );
  main.querySelector("input")?.focus();
}
