const express = require("express");

const app = express();
app.get("/", (req, res) => res.send("hello from express, installed by yarn"));
app.listen(Number(process.env.PORT || 3000), "0.0.0.0");
