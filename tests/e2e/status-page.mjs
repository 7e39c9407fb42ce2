// The status page in a real browser: headless Debian Chromium driven by playwright-core.
// Usage: node status-page.mjs <admin URL> <screenshot path>
// Prints one JSON line with what the page shows (endpoints and their states), then waits for a
// line on stdin, reloads the page and prints the second view. Exits non-zero on any failure.
import { chromium } from "playwright-core";
import readline from "node:readline";

const [url, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  // playwright gives every launch a new, empty profile directory of its own.
});
const view = async (page) => ({
  title: await page.title(),
  tailnet: (await page.textContent("#tailnet-state"))?.trim(),
  endpoints: await page.$$eval("#endpoints tr[data-endpoint]", (rows) =>
    rows.map((r) => ({ name: r.dataset.endpoint, state: r.querySelector(".state").textContent.trim() }))),
  tools: await page.$$eval("#tools tr", (rows) => rows.slice(1).map((r) => r.children[1].textContent.trim())),
  refusals: await page.$$eval("#refusals tr", (rows) => rows.slice(1).map((r) => r.children[3].textContent.trim())),
});
try {
  const page = await browser.newPage();
  await page.goto(url);
  const first = await view(page);
  await page.screenshot({ path: shot, fullPage: true });
  console.log(JSON.stringify(first));
  const rl = readline.createInterface({ input: process.stdin });
  await new Promise((r) => { rl.once("line", r); rl.once("close", r); });
  await page.reload();
  console.log(JSON.stringify(await view(page)));
  rl.close();
} catch (e) {
  console.error("status page check failed:", e?.stack || e);
  process.exit(1);
} finally {
  await browser.close();
}
