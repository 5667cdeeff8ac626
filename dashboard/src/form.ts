// Forms whose API errors are shown next to the field the API names (or above the buttons).

import { ApiError } from "./api";
import { h } from "./dom";

export interface Field {
  name: string;
  label: string;
  type?: string;
  placeholder?: string;
  required?: boolean;
  value?: string;
  options?: string[];
  hint?: string;
  /** Fields with the same group are shown together, folded under this summary. */
  group?: string;
}

/** `NAME=VALUE` lines (blank lines skipped) as a map; a line without `=` is an error naming
 * `field`. */
export function pairs(text: string, field: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const l = line.trim();
    if (!l) continue;
    const i = l.indexOf("=");
    if (i <= 0) throw new ApiError(422, `${JSON.stringify(l.slice(0, 40))} is not NAME=VALUE`, field);
    out[l.slice(0, i).trim()] = l.slice(i + 1);
  }
  return out;
}

export function form(
  fields: Field[],
  submit: string,
  onSubmit: (values: Record<string, string>) => Promise<void>,
  opts: { inline?: boolean; danger?: boolean; errorFields?: Record<string, string> } = {},
): HTMLFormElement {
  const errors = new Map<string, HTMLElement>();
  const general = h("p", { class: "error", role: "alert", hidden: true });
  const button = h("button", { type: "submit", class: opts.danger ? "danger" : "primary" }, submit);
  const rows: HTMLElement[] = [];
  const groups = new Map<string, HTMLElement>();
  fields.forEach((f) => {
    const id = `f-${f.name}-${Math.random().toString(36).slice(2, 8)}`;
    const err = h("span", { class: "field-error", id: `${id}-err`, role: "alert", hidden: true });
    errors.set(f.name, err);
    const described = { id, name: f.name, "aria-describedby": `${id}-err` };
    const input = f.type === "textarea"
      ? h("textarea", { ...described, rows: 3, placeholder: f.placeholder, spellcheck: "false" }, f.value ?? "")
      : f.options
      ? h(
          "select",
          { id, name: f.name, "aria-describedby": `${id}-err` },
          f.options.map((o) => h("option", { value: o, selected: o === f.value }, o || "—")),
        )
      : h("input", {
          id,
          name: f.name,
          type: f.type ?? "text",
          placeholder: f.placeholder,
          required: f.required,
          value: f.value,
          autocomplete: f.type === "password" ? "current-password" : "off",
          "aria-describedby": `${id}-err`,
        });
    const row = h(
      "div",
      { class: "field" },
      h("label", { for: id }, f.label),
      input,
      f.hint ? h("small", { class: "hint" }, f.hint) : null,
      err,
    );
    if (!f.group) {
      rows.push(row);
      return;
    }
    let group = groups.get(f.group);
    if (!group) {
      group = h("div", { class: "form-group" });
      groups.set(f.group, group);
      rows.push(h("details", { class: "more" }, h("summary", {}, f.group), group));
    }
    group.append(row);
  });
  const el = h(
    "form",
    { class: opts.inline ? "form inline" : "form", novalidate: true },
    rows,
    general,
    h("div", { class: "actions" }, button),
  );
  el.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const e of errors.values()) e.hidden = true;
    general.hidden = true;
    const values: Record<string, string> = {};
    for (const f of fields) {
      const input = el.elements.namedItem(f.name) as HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;
      values[f.name] = input.value.trim();
      if (f.required && !values[f.name]) {
        show(errors.get(f.name)!, `${f.label} is required`);
        input.focus();
        return;
      }
    }
    button.disabled = true;
    try {
      await onSubmit(values);
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      const field = e instanceof ApiError ? e.field : undefined;
      const mapped = field ? opts.errorFields?.[field] ?? field : undefined;
      const target = mapped ? errors.get(mapped) ?? errors.get(mapped.split(/[.[]/)[0]) : undefined;
      if (target) {
        // A folded field's error is opened to be seen.
        const folded = target.closest("details");
        if (folded) folded.open = true;
      }
      show(target ?? general, msg);
    } finally {
      button.disabled = false;
    }
  });
  return el;
}

function show(el: HTMLElement, msg: string): void {
  el.textContent = msg;
  el.hidden = false;
}

/** A button that runs `action` and shows its error beside it. */
export function action(
  label: string,
  run: () => Promise<void>,
  opts: { danger?: boolean; confirm?: string } = {},
): HTMLSpanElement {
  const err = h("span", { class: "field-error", role: "alert", hidden: true });
  const b = h("button", { type: "button", class: opts.danger ? "danger" : "" }, label);
  b.addEventListener("click", async () => {
    if (opts.confirm && !window.confirm(opts.confirm)) return;
    err.hidden = true;
    b.disabled = true;
    try {
      await run();
    } catch (e) {
      show(err, e instanceof Error ? e.message : String(e));
    } finally {
      b.disabled = false;
    }
  });
  return h("span", { class: "action" }, b, err);
}

export interface Ask {
  title: string;
  /** Paragraphs: what happens. */
  say: string[];
  /** The confirming button's label (a danger button). */
  confirm: string;
  /** When set, the confirming button works only once this is typed (a name). */
  typed?: string;
}

/** Asks before something that cannot be undone: a modal dialog (Escape or Cancel says no, focus
 * stays inside it); resolves to the answer. */
export function ask(q: Ask): Promise<boolean> {
  return new Promise((resolve) => {
    const yes = h("button", { value: "yes", class: "danger", id: "dialog-confirm", disabled: q.typed !== undefined }, q.confirm);
    const input = q.typed === undefined ? null : h("input", { name: "typed", autocomplete: "off", "aria-label": `Type ${q.typed} to confirm` });
    input?.addEventListener("input", () => {
      yes.disabled = input.value !== q.typed;
    });
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": "dialog-title" },
      h("h2", { id: "dialog-title" }, q.title),
      q.say.map((p, i) => h("p", { class: i ? "muted" : "" }, p)),
      input ? h("label", {}, "Type ", h("strong", { class: "mono" }, q.typed!), " to confirm", input) : null,
      h(
        "form",
        { method: "dialog", class: "actions" },
        h("button", { value: "cancel", autofocus: input === null }, "Cancel"),
        yes,
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "yes");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
    input?.focus();
  });
}
