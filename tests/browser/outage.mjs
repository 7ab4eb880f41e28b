// Drives Debian's Chromium through two pages of one site while the
// collector is down: on the first page a click, a failed send (the tracker
// retries every 5 s), then a navigation to the second page. It prints
// "on next page" and waits for the collector to come up (the test starts
// it then), then for the tracker to have nothing left unsent.
// Usage: node outage.mjs TOOLS_DIR PAGE_URL COLLECTOR_URL
import { createRequire } from "node:module";

const [tools, pageUrl, collectorUrl] = process.argv.slice(2);
const require = createRequire(tools + "/node_modules/");
const { chromium } = require("playwright-core");

// events the tracker still holds in localStorage (unacknowledged)
const stored = () => {
  let n = 0;
  for (let i = 0; i < localStorage.length; i++) {
    const k = localStorage.key(i);
    if (k.startsWith("tauc_queue")) n += JSON.parse(localStorage.getItem(k) || "[]").length;
  }
  return n;
};

async function collectorUp(within) {
  const end = Date.now() + within;
  while (Date.now() < end) {
    try {
      if ((await fetch(collectorUrl + "/healthz")).ok) return true;
    } catch (e) {}
    await new Promise((r) => setTimeout(r, 200));
  }
  return false;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
try {
  const page = await browser.newPage();
  await page.goto(pageUrl);
  await page.waitForFunction(() => window.tauc !== undefined, null, { timeout: 15000 });
  await page.click("#buy");
  // the 5 s batch is sent and fails: the collector is down
  await page.waitForTimeout(6500);
  console.log("stored on the first page: " + (await page.evaluate(stored)));
  await page.goto(new URL("/next", pageUrl).href);
  await page.waitForFunction(() => window.tauc !== undefined, null, { timeout: 15000 });
  console.log("stored on the next page: " + (await page.evaluate(stored)));
  console.log("on next page");
  if (!(await collectorUp(60000))) throw new Error("the collector did not come up");
  // the tracker's next retry (within 5 s) delivers everything
  await page.waitForFunction(`(${stored})() === 0`, null, { timeout: 30000 });
  console.log("stored after the collector came up: " + (await page.evaluate(stored)));
} finally {
  await browser.close();
}
