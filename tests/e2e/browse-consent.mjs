// Open an authorization URL in headless Chromium, go through tsidp (oidc-provider) and
// tailbridge's consent page, press Allow, and let the browser land on the client's own
// callback (a real listener, such as mcp-remote's). Prints one JSON line.
// Usage: node browse-consent.mjs <authorize URL> <callback URL prefix>
import { chromium } from "playwright-core";

const [start, prefix] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage();
  await page.goto(start);
  await page.waitForSelector("button[value=allow]", { timeout: 20000 });
  const client = (await page.textContent("#client-name"))?.trim();
  const landed = page.waitForURL((u) => u.toString().startsWith(prefix), { timeout: 20000 });
  await page.check("input[name=confirm]");
  await page.click("button[value=allow]");
  await landed;
  const u = new URL(page.url());
  console.log(JSON.stringify({ client, iss: u.searchParams.get("iss"), code: !!u.searchParams.get("code") }));
} catch (e) {
  console.error("consent browsing failed:", e?.stack || e);
  process.exitCode = 1;
} finally {
  await browser.close();
}
