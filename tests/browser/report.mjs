// Opens a `tauc-job report` page in Debian's Chromium with playwright-core:
// records console errors, page errors and any request that leaves the file
// (the page must be self-contained), reads every chart's marks back, and
// takes a full-page PNG screenshot.
// Usage: node report.mjs TOOLS_DIR REPORT_FILE SCREENSHOT_PNG
// Prints one JSON object: {errors, requests, charts: {id: {points, alerts, values}}}.
import { createRequire } from "node:module";

const [tools, file, png] = process.argv.slice(2);
const require = createRequire(tools + "/node_modules/");
const { chromium } = require("playwright-core");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  const requests = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("request", (r) => {
    if (!r.url().startsWith("file://")) requests.push(r.url());
  });
  await page.goto("file://" + file);
  const charts = await page.evaluate(() => {
    const out = {};
    for (const svg of document.querySelectorAll("svg[data-chart]")) {
      const marks = [...svg.querySelectorAll("[data-value]")];
      out[svg.dataset.chart] = {
        declared: Number(svg.dataset.points),
        points: marks.length,
        alerts: svg.querySelectorAll("[data-alert]").length,
        values: marks.map((m) => Number(m.dataset.value)),
        visible: svg.getBoundingClientRect().width > 300,
      };
    }
    return out;
  });
  await page.screenshot({ path: png, fullPage: true });
  console.log(JSON.stringify({ errors, requests, charts, title: await page.title() }));
} finally {
  await browser.close();
}
