// The dashboard's shell: the session, the navigation and a hash router (#/...), so the server
// serves one page and every view is a link that can be bookmarked and reloaded.

import "./style.css";
import { ApiError, SessionInfo, del, get, setCsrf, whenSignedOut } from "./api";
import { clear, h } from "./dom";
import { deploymentPage } from "./deployment";
import { operatorPage } from "./operator";
import { overviewPage, projectPage } from "./projects";
import { servicePage } from "./service";
import { signInPage } from "./signin";
import { teamPage } from "./team";

export type Cleanup = () => void;
export type View = (main: HTMLElement, params: string[], session: SessionInfo) => Promise<Cleanup | void>;

const routes: [RegExp, View][] = [
  [/^\/$/, overviewPage],
  [/^\/projects\/([0-9a-f-]{36})$/, projectPage],
  [/^\/services\/([0-9a-f-]{36})(?:\/(deployments|variables|domains|logs|metrics|settings|backups))?$/, servicePage],
  [/^\/deployments\/([0-9a-f-]{36})$/, deploymentPage],
  [/^\/operator$/, operatorPage],
  [/^\/team$/, teamPage],
];

let session: SessionInfo | null = null;
let cleanup: Cleanup | null = null;
let generation = 0;
/** The path drawn last: a new one moves the keyboard focus to the page (a redraw of the same
 * page, after a form, leaves it where it is). */
let drawnPath = "";

const main = document.getElementById("main")!;
const nav = document.getElementById("nav")!;

function drawNav(): void {
  clear(nav);
  if (!session) return;
  const who =
    session.kind === "operator"
      ? "operator"
      : `${session.organization?.name ?? ""} · ${session.role ?? ""}`;
  nav.append(
    h("a", { href: "#/" }, "Projects"),
    h("a", { href: "#/operator" }, session.kind === "operator" ? "Nodes" : "Activity"),
    ...(session.kind === "organization" ? [h("a", { href: "#/team" }, "Team")] : []),
    h("span", { class: "who", title: session.token_name ?? "" }, who),
    h(
      "button",
      {
        type: "button",
        class: "link",
        onclick: async () => {
          try {
            await del("/session");
          } finally {
            session = null;
            location.hash = "#/signin";
          }
        },
      },
      "Sign out",
    ),
  );
}

async function route(): Promise<void> {
  const mine = ++generation;
  cleanup?.();
  cleanup = null;
  const path = (location.hash.replace(/^#/, "") || "/").split("?")[0];
  if (!session && path !== "/signin") {
    try {
      session = await get<SessionInfo>("/session");
      setCsrf(session.csrf_token);
    } catch {
      session = null;
    }
  }
  if (mine !== generation) return;
  drawNav();
  clear(main);
  if (path === "/signin" || !session) {
    await signInPage(main, (s) => {
      session = s;
      setCsrf(s.csrf_token);
      location.hash = "#/";
    });
    return;
  }
  const hit = routes.find(([re]) => re.test(path));
  if (!hit) {
    main.append(h("h1", {}, "Not found"), h("p", {}, "There is no such page. "), h("a", { href: "#/" }, "Projects"));
    return;
  }
  const params = path.match(hit[0])!.slice(1);
  try {
    const done = await hit[1](main, params, session);
    if (mine !== generation) done?.();
    else {
      cleanup = done ?? null;
      if (drawnPath && drawnPath !== path && !main.contains(document.activeElement)) main.focus({ preventScroll: true });
      drawnPath = path;
    }
  } catch (e) {
    if (mine !== generation) return;
    clear(main);
    const notFound = e instanceof ApiError && e.status === 404;
    main.append(
      h("h1", {}, notFound ? "Not found" : "Something went wrong"),
      h("p", { class: "error", role: "alert" }, e instanceof Error ? e.message : String(e)),
      h("a", { href: "#/" }, "Back to projects"),
    );
  }
}

// "Skip to content" moves the focus to the page; as a plain #main link it would be a route.
document.querySelector<HTMLAnchorElement>(".skip")?.addEventListener("click", (ev) => {
  ev.preventDefault();
  main.focus();
});

whenSignedOut(() => {
  session = null;
  if (location.hash !== "#/signin") location.hash = "#/signin";
});
window.addEventListener("hashchange", () => void route());
void route();
