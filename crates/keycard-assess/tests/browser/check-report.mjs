// Loads keycard's HTML assessment report in headless chromium (Debian's,
// driven by playwright-core) and prints what a reader would see as one JSON
// object; crates/keycard-assess/tests/report.rs asserts on it.
//
//   KEYCARD_TEST_NODE_PATH=.cache/node/node_modules KEYCARD_TEST_CHROMIUM=/usr/bin/chromium \
//     node crates/keycard-assess/tests/browser/check-report.mjs report.html
//
// ESM ignores NODE_PATH, so playwright-core is required from the directory
// scripts/test installs it to.
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";

const require = createRequire(import.meta.url);
const nodePath = process.env.KEYCARD_TEST_NODE_PATH;
const executablePath = process.env.KEYCARD_TEST_CHROMIUM || "/usr/bin/chromium";
const file = process.argv[2];
if (!nodePath || !file) {
  console.error("usage: KEYCARD_TEST_NODE_PATH=… node check-report.mjs REPORT.html");
  process.exit(2);
}
const { chromium } = require(path.join(path.resolve(nodePath), "playwright-core"));
const url = pathToFileURL(path.resolve(file)).href;

const browser = await chromium.launch({
  executablePath,
  headless: true,
  // Root in a container has no user namespaces for the sandbox.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const result = { consoleErrors: [], pageErrors: [], requests: [] };
try {
  const context = await browser.newContext({ javaScriptEnabled: true });
  const page = await context.newPage();
  page.setDefaultTimeout(5000);
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") result.consoleErrors.push(`${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => result.pageErrors.push(String(e)));
  page.on("request", (r) => {
    if (r.url() !== url && !r.url().startsWith("data:")) result.requests.push(r.url());
  });
  await page.goto(url, { waitUntil: "load" });

  const rows = () => page.locator("#findings-table tbody tr.finding:visible").count();

  result.overall = (await page.locator("#overall-stage").textContent()).trim();
  result.overallVisible = await page.locator("#overall-stage").isVisible();
  result.pillars = {};
  for (const card of await page.locator("article.pillar").all()) {
    const key = await card.getAttribute("data-pillar");
    const score = card.locator(".score");
    result.pillars[key] = {
      score: await score.getAttribute("data-score"),
      scoreText: (await score.textContent()).trim(),
      stage: (await card.locator(".stage-badge").textContent()).trim(),
      visible: (await score.isVisible()) && (await card.locator(".stage-badge").isVisible()),
    };
  }
  result.radar = await page.locator("svg#radar").isVisible();

  result.rows = await rows();
  result.count = (await page.locator("#finding-count").textContent()).trim();
  result.bySeverity = {};
  for (const s of ["critical", "high", "medium", "low"]) {
    await page.selectOption("#f-severity", s);
    result.bySeverity[s] = await rows();
  }
  await page.click("#f-reset");
  await page.waitForFunction(() => document.getElementById("f-severity").value === "");
  await page.waitForTimeout(50);
  result.afterReset = await rows();

  await page.fill("#f-text", "</script>");
  result.hostileRows = await rows();
  const hostileRow = page.locator("#findings-table tbody tr.finding:visible").first();
  result.hostileTextShown = result.hostileRows > 0 &&
    (await hostileRow.textContent()).includes('</script><img src=x onerror="window.__pwned=1">');
  result.pwned = await page.evaluate(() => window.__pwned === 1);
  result.imgElements = await page.evaluate(() => document.querySelectorAll("img").length);

  // Expand the evidence of the first row.
  await page.fill("#f-text", "");
  result.detailsOpened = false;
  if ((await rows()) > 0) {
    const first = page.locator("#findings-table tbody tr.finding").first();
    await first.locator("button.toggle").click();
    const detail = page.locator("#findings-table tbody tr.detail").first();
    result.detailsOpened = (await detail.isVisible()) && (await detail.textContent()).includes("Remediation");
  }

  // A click on the critical bar filters the table.
  await page.click('.bar-row[data-filter="severity:critical"]');
  result.chartFilterRows = await rows();

  result.graph = await page.locator("svg#identity-graph").isVisible();
  result.graphNodes = await page.locator("#identity-graph .node.ident").count();
  result.graphFocus = false;
  if (result.graphNodes > 0) {
    await page.locator("#identity-graph .node.ident").first().click();
    result.graphFocus = await page.evaluate(() =>
      document.getElementById("identity-graph").classList.contains("focus") &&
      document.querySelectorAll("#identity-graph .edge.hl").length > 0);
  }
  result.storeRows = await page.locator("#stores-table tbody tr").count();
  result.gapsVisible = await page.locator("#coverage.gaps").isVisible();
  await context.close();

  // With JavaScript off the summary still reads.
  const noJs = await browser.newContext({ javaScriptEnabled: false });
  const p2 = await noJs.newPage();
  await p2.goto(url, { waitUntil: "load" });
  result.noJs = {
    overall: (await p2.locator("#overall-stage").textContent()).trim(),
    pillarScores: await p2.locator("article.pillar .score:visible").count(),
    noscriptNote: await p2.locator("#noscript-note").isVisible(),
  };
  await noJs.close();
} catch (e) {
  result.pageErrors.push(`check-report: ${e && e.stack ? e.stack : e}`);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
