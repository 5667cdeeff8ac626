// adapter-static needs every page prerendered (its documentation's one-line setup).
export const prerender = true;
