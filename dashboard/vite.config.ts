import { defineConfig } from "vite";

// Served by stackpad-control under /dashboard/ (control/src/dashboard.rs embeds the output).
export default defineConfig({
  base: "/dashboard/",
  build: {
    assetsDir: "assets",
    sourcemap: false,
    emptyOutDir: true,
    // No inline scripts: the page's Content-Security-Policy allows only files from the origin.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
  },
});
