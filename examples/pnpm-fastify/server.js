const fastify = require("fastify")();
const { greeting } = require("./dist/greeting.js");

fastify.get("/", async () => greeting("pnpm"));

fastify.listen({ port: Number(process.env.PORT || 3000), host: "0.0.0.0" }, (err) => {
  if (err) {
    console.error(err);
    process.exit(1);
  }
});
