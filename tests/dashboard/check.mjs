// check.mjs - the dashboard in a real browser: Debian's headless chromium
// driven by playwright-core (both installed by deploy/install-deps.sh).
//
// Opens API_URL + "/", types a fresh counter's name into the filter,
// writes the counter through the API, waits until its row shows the
// value, writes again and waits for the row to follow (the 2 s refresh),
// clicks the row and waits until the chart has drawn the history's points
// with the written sum. Any console error, failed load or uncaught
// exception on the page (a CSP refusal, a script bug) fails it too.
// Exits 0, or 1 with one line saying what went wrong; bounded by
// CHECK_TIMEOUT_MS (default 50 s).
//
// Against an api with auth on, set READ_TOKEN and WRITE_TOKEN: the check
// then also waits for the page to ask for a token and types READ_TOKEN
// into its field, and writes with WRITE_TOKEN.
//
//   API_URL=http://127.0.0.1:8080 node tests/dashboard/check.mjs
// Environment: API_URL (required); NODE_TOOLS, the npm prefix that holds
// playwright-core [<repo>/var/node]; CHROMIUM [/usr/bin/chromium];
// SCREENSHOT, a PNG path to save the page to at the end.
import { createRequire } from "node:module";
import { randomBytes } from "node:crypto";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "..", "..");
const apiUrl = (process.env.API_URL || "").replace(/\/+$/, "");
const nodeTools = process.env.NODE_TOOLS || path.join(repo, "var", "node");
const chromium = process.env.CHROMIUM || "/usr/bin/chromium";
const totalMs = Number(process.env.CHECK_TIMEOUT_MS || 50000);
const started = Date.now();

function fail(msg) {
  console.error(`dashboard check: FAILED: ${msg}`);
  process.exit(1);
}

function left() {
  return Math.max(1000, totalMs - (Date.now() - started));
}

if (!apiUrl) fail("API_URL is not set");

let playwright;
try {
  const require = createRequire(path.join(nodeTools, "package.json"));
  playwright = require("playwright-core");
} catch (e) {
  fail(`cannot load playwright-core from ${nodeTools} (run deploy/install-deps.sh): ${e.message}`);
}

// Past the bound, whatever is pending: fail (the browser dies with us).
setTimeout(() => fail(`not done within ${totalMs} ms`), totalMs).unref();

const readToken = process.env.READ_TOKEN || "";
const writeToken = process.env.WRITE_TOKEN || "";

async function write(name, value) {
  const headers = { "Content-Type": "application/json" };
  if (writeToken) headers.Authorization = `Bearer ${writeToken}`;
  const r = await fetch(`${apiUrl}/api/v1/counter/${name}/increment`, {
    method: "POST",
    headers,
    body: JSON.stringify({ value }),
  });
  const body = await r.text();
  if (r.status !== 200) fail(`increment ${name} by ${value}: HTTP ${r.status} ${body}`);
  return JSON.parse(body).current_value;
}

async function step(what, fn) {
  try {
    return await fn();
  } catch (e) {
    throw new Error(`${what}: ${e.message.split("\n")[0]}`);
  }
}

const browser = await playwright.chromium
  .launch({
    executablePath: chromium,
    headless: true,
    // CI runs as root, where chromium's sandbox cannot start
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
    timeout: 20000,
  })
  .catch((e) => fail(`cannot start ${chromium}: ${e.message.split("\n")[0]}`));

const problems = [];
let code = 0;
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  // A failed load says which URL in its own event; the console's copy
  // of it does not.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource"))
      problems.push(`console: ${m.text()}`);
  });
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`${r.request().method()} ${r.url()} answered ${r.status()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));

  const resp = await step("open the page", () => page.goto(`${apiUrl}/`, { timeout: left() }));
  if (resp.status() !== 200) throw new Error(`GET / answered ${resp.status()}`);
  await step("the table renders", () => page.waitForSelector("#counters tbody", { state: "attached", timeout: left() }));
  if (readToken) {
    await step("the page asks for a token", () => page.waitForSelector("#token-form:not([hidden])", { timeout: left() }));
    // the refusals that made it ask are expected; later ones are not
    problems.length = 0;
    await page.fill("#token", readToken);
    await page.click("#token-form button");
  }

  // The list shows the first 200 names: filter to this one's, as a user
  // would among many.
  const name = `dash.check-${randomBytes(6).toString("hex")}`;
  await page.fill("#filter", name);
  const first = await write(name, 7);
  const row = `tr[data-name="${name}"]`;
  await step(`row ${name} shows ${first}`, () =>
    page.waitForSelector(`${row} td.value[data-value="${first}"]`, { timeout: left() }),
  );
  const second = await write(name, 3);
  await step(`row ${name} follows to ${second}`, () =>
    page.waitForSelector(`${row} td.value[data-value="${second}"]`, { timeout: left() }),
  );
  const kind = await page.textContent(`${row} td.kind`);
  if (kind !== "counter") throw new Error(`row ${name}: kind ${JSON.stringify(kind)}, want "counter"`);

  await page.click(row);
  await step(`the chart of ${name} draws the sum ${second}`, () =>
    page.waitForFunction(
      ([n, sum]) => {
        const svg = document.getElementById("chart");
        return svg.dataset.name === n && Number(svg.dataset.points) > 0 && Number(svg.dataset.sum) === sum;
      },
      [name, second],
      { timeout: left() },
    ),
  );
  const drawn = await page.evaluate(() => {
    const svg = document.getElementById("chart");
    const line = svg.querySelector("polyline");
    return {
      points: Number(svg.dataset.points),
      dots: svg.querySelectorAll("circle").length,
      vertices: line ? line.getAttribute("points").trim().split(/\s+/).length : 0,
    };
  });
  // last hour by minute: 60 or 61 minutes, each a dot and a vertex
  if (drawn.points < 60 || drawn.dots !== drawn.points || drawn.vertices !== drawn.points)
    throw new Error(`chart: ${JSON.stringify(drawn)}, want 60+ points, each a dot and a vertex`);

  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  if (problems.length) throw new Error(problems.join("; "));
  console.log(
    `dashboard check: ok: ${name} shown as ${first} then ${second}, chart of ${drawn.points} points ` +
      `in ${Date.now() - started} ms`,
  );
} catch (e) {
  console.error(`dashboard check: FAILED: ${e.message}`);
  if (problems.length) console.error(`dashboard check: the page also said: ${problems.join("; ")}`);
  code = 1;
} finally {
  await browser.close().catch(() => {});
}
process.exit(code);
