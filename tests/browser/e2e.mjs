// Drives Debian's Chromium with playwright-core through one page view of
// a page that includes the tracker: a click on a marked button, a banner
// scrolled into view, a cross-origin fetch the API refuses (no CORS
// headers) and a cross-origin XMLHttpRequest POST it refuses too, then a
// route change of a single-page app (history.pushState), then a
// navigation away (pagehide sends the beacon).
// Usage: node e2e.mjs TOOLS_DIR PAGE_URL API_URL
import { createRequire } from "node:module";

const [tools, pageUrl, apiUrl] = process.argv.slice(2);
const require = createRequire(tools + "/node_modules/");
const { chromium } = require("playwright-core");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const page = await browser.newPage();
  page.on("console", (m) => console.log("page console:", m.text()));
  await page.goto(pageUrl);
  await page.waitForFunction(() => window.tauc !== undefined, null, { timeout: 15000 });
  await page.click("#buy");
  await page.locator("#banner").scrollIntoViewIfNeeded();
  await page.waitForTimeout(800);
  const seen = await page.evaluate(async (u) => {
    try {
      const r = await fetch(u);
      return "resolved " + r.status;
    } catch (e) {
      return "rejected " + String(e);
    }
  }, apiUrl);
  console.log("page fetch: " + seen);
  const xhr = await page.evaluate(
    (u) =>
      new Promise((done) => {
        const x = new XMLHttpRequest();
        x.open("POST", u);
        x.onerror = () => done("error status " + x.status);
        x.onload = () => done("load " + x.status);
        x.send("{}");
      }),
    new URL("/v1/orders/987", apiUrl).href
  );
  console.log("page xhr: " + xhr);
  const clicks = await page.evaluate(() => window.buyClicks);
  console.log("page clicks: " + clicks);
  // a single-page app's route change: a page_leave and a page_enter
  await page.evaluate(() => history.pushState({}, "", "/spa/checkout"));
  await page.waitForTimeout(300);
  console.log("page location: " + (await page.evaluate(() => location.pathname)));
  await page.goto(new URL("/next", pageUrl).href);
  await page.waitForTimeout(1500);
} finally {
  await browser.close();
}
